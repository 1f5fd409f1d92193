"""What a release is and how one is made: a wheel of `station` (`station-<version>-py3-none-any.whl`), and beside it
its detached signature, base64 of the manufacturer's signature over the whole file (SHA-256; RSA-PSS or ECDSA, see
station/firmware/signature.py). The operator uploads the wheel where the CSMS's UpdateFirmware `location` points and
gives the CSMS the signature and the signing certificate (PEM).

`station release build` runs `pip wheel` over a source tree and signs the result; `station release sign` signs a
file that exists. The private key never leaves the build machine: a station only holds the root certificate.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from station.firmware.signature import file_digest

# PEP 427 file name: distribution-version(-build)?-python-abi-platform.whl; the distribution is always `station`.
WHEEL_NAME = re.compile(r"^station-(?P<version>[A-Za-z0-9_.!+]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")
VERSION = re.compile(r"^[0-9][A-Za-z0-9_.!+]{0,63}$")


class NotARelease(Exception):
    """A file that is not a `station` wheel (the name says which distribution and version it is)."""


def release_version(path: Path) -> str:
    """The version a release file carries in its name; NotARelease when it is not a station wheel."""
    match = WHEEL_NAME.match(path.name)
    if match is None or not VERSION.match(match["version"]):
        raise NotARelease(f"{path.name[:80]!r} is not a station wheel (station-<version>-py3-none-any.whl)")
    return match["version"]


def sign_file(path: Path, key_pem: bytes) -> str:
    """Base64 of the signature over the file with the manufacturer's signing key (RSA-PSS/SHA-256, ECDSA/SHA-256)."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    digest = file_digest(str(path))
    prehashed = utils.Prehashed(hashes.SHA256())
    if isinstance(key, rsa.RSAPrivateKey):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
        signature = key.sign(digest, pss, prehashed)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(digest, ec.ECDSA(prehashed))
    else:
        raise ValueError(f"signing key of type {type(key).__name__} is not RSA or EC")
    return base64.b64encode(signature).decode("ascii")


def build_wheel(source: Path, out: Path) -> Path:
    """`pip wheel` of the source tree (no dependencies, no build isolation: offline, with the setuptools at hand).
    Returns the wheel file."""
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("station-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True,
    )
    built = sorted(set(out.glob("station-*.whl")) - before) or sorted(out.glob("station-*.whl"))
    if not built:
        raise NotARelease(f"pip wheel wrote no station wheel into {out}")
    return built[-1]


def write_signature(wheel: Path, key_pem: bytes) -> Path:
    """The signature beside the wheel as `<wheel>.sig` (one line of base64)."""
    sig = wheel.with_name(wheel.name + ".sig")
    sig.write_text(sign_file(wheel, key_pem) + "\n")
    return sig
