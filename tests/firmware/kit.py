"""Test kit for firmware updates: a throwaway manufacturer CA with a firmware signing certificate, release wheels of
this very source tree under another version (optionally one whose daemon crashes on start), and a real HTTP(S) file
server on loopback (aiohttp) that can be told to fail the first N requests."""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from station.firmware.release import build_wheel
from tests.security.pki import CertificateAuthority, _name, _write_key

SOURCE = Path(__file__).resolve().parents[2]


@dataclass
class Signer:
    root: Path  # the ManufacturerRootCertificate (PEM), what [firmware] manufacturer_root names
    cert_pem: str  # the firmware signing certificate, what UpdateFirmware carries
    key: Path


def manufacturer(directory: Path, name: str = "Test Manufacturer Root") -> Signer:
    ca = CertificateAuthority(directory, name.replace(" ", "-"))
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{name} firmware signing"))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    key_path = directory / f"{ca.name}-signing.key"
    _write_key(key, key_path)
    return Signer(ca.path, cert.public_bytes(serialization.Encoding.PEM).decode(), key_path)


def build_release(directory: Path, version: str, *, crash: bool = False) -> Path:
    """A wheel of this source tree as `version`; with `crash`, `station run` of it dies at once (exit 70)."""
    tree = directory / f"src-{version}"
    shutil.copytree(SOURCE / "station", tree / "station", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(SOURCE / "README.md", tree / "README.md")
    pyproject = (SOURCE / "pyproject.toml").read_text()
    (tree / "pyproject.toml").write_text(re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', pyproject, count=1))
    init = tree / "station" / "__init__.py"
    init.write_text(re.sub(r'__version__ = ".*"', f'__version__ = "{version}"', init.read_text()))
    if crash:
        cli = tree / "station" / "cli.py"
        cli.write_text(
            cli.read_text().replace(
                "def _cmd_run(args: argparse.Namespace) -> int:\n",
                "def _cmd_run(args: argparse.Namespace) -> int:\n    raise SystemExit(70)  # a broken release\n",
            )
        )
    return build_wheel(tree, directory / "dist")


@dataclass
class FileServer:
    """Serves the files of `root` at /<name>; the first `fail_first` requests get HTTP 503."""

    root: Path
    tls: ssl.SSLContext | None = None
    fail_first: int = 0
    slow: float = 0.0  # seconds between 64 KiB chunks (a download long enough to be interrupted)
    requests: int = 0
    port: int = 0
    _runner: web.AppRunner | None = field(default=None, repr=False)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.requests <= self.fail_first:
            return web.Response(status=503, text="try later")
        path = self.root / request.match_info["name"]
        if not path.is_file():
            return web.Response(status=404)
        if not self.slow:
            return web.FileResponse(path)
        data = path.read_bytes()
        response = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await response.prepare(request)
        for at in range(0, len(data), 1 << 16):
            await response.write(data[at : at + (1 << 16)])
            await asyncio.sleep(self.slow)
        return response

    async def start(self) -> FileServer:
        app = web.Application()
        app.router.add_get("/{name}", self._get)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    def url(self, name: str) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/{name}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
