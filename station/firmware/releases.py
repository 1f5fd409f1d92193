"""The releases folder and the life of an install across restarts.

Layout: `<releases>/<version>/` is one venv per release; `current` and `previous` are symlinks (the unit starts
`<releases>/current/bin/station`). A new venv is made `--without-pip` and gets the release wheel installed
`--no-index --no-deps` by the running interpreter's pip (`pip --python`): nothing is fetched from the internet. Its
dependencies are the running release's: a `station-deps.pth` names every site-packages directory the running
interpreter uses (flattened, so a chain of releases never grows), so a release that needs a new or newer dependency
must come as a new base install; releases are never deleted automatically (a later one may name an earlier one's
site-packages). The link switch is atomic (a new link renamed over the old).

Across the restart, `<state dir>/firmware-update.json` (beside the store) says what is going on: `booting` (written
before the switch) while the new release has to prove itself, `rolled_back` once it failed. `preflight` (the unit's
ExecStartPre, run from the `previous` release, which is known to work) counts the new release's starts and rolls back
after `max_boots`; the new daemon rolls back itself when no BootNotification is Accepted within `boot_timeout`. The
store is copied before the switch; a rollback to a release that cannot open the store (its migrations are older)
puts the copy back and keeps the newer file aside, never deleting it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("station.firmware")

RECORD = "firmware-update.json"
INSTALLING = ".installing"  # inside a venv still being made: it is not a release yet


class InstallFailed(Exception):
    pass


@dataclass
class Pending:
    """The install that waits for its new release to boot (or that was rolled back and waits to be reported)."""

    request_id: int | None
    signed: bool
    version: str
    target: str  # the new release's venv
    previous: str  # the venv it replaces
    store_copy: str
    store_schema: int
    state: str = "booting"  # or "rolled_back"
    boots: int = 0
    reason: str = ""  # rolled_back: InstallationFailed or InstallVerificationFailed


def load_pending(state_dir: Path) -> Pending | None:
    try:
        data = json.loads((state_dir / RECORD).read_text())
        return Pending(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.error("firmware update record unreadable; ignored", file=str(state_dir / RECORD), error=str(exc)[:200])
        return None


def save_pending(state_dir: Path, pending: Pending) -> None:
    _atomic_write(state_dir / RECORD, json.dumps(asdict(pending)))


def clear_pending(state_dir: Path) -> None:
    (state_dir / RECORD).unlink(missing_ok=True)
    _fsync_dir(state_dir)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".new")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def running_release() -> Path:
    """The venv this process runs from."""
    return Path(sys.prefix)


def _site_dirs() -> list[str]:
    """The running interpreter's site-packages directories, in import order (including those a .pth named)."""
    return [p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages")) and Path(p).is_dir()]


class Releases:
    def __init__(self, root: Path) -> None:
        self.root = root

    def link(self, name: str) -> Path | None:
        try:
            return Path(os.readlink(self.root / name))
        except OSError:
            return None

    def current(self) -> Path:
        return self.link("current") or running_release()

    def install(self, wheel: Path, version: str) -> Path:
        """A new venv `<root>/<version>` with the wheel in it, checked by importing it. Blocking (run in a thread)."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / version
        if target.resolve() == running_release().resolve():
            raise InstallFailed(f"version {version} is the one running")
        if target.exists():
            shutil.rmtree(target)  # a venv of the same version, finished or not: made again from this file
        try:
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True, timeout=120)
            (target / INSTALLING).touch()
            python = target / "bin" / "python"
            site = subprocess.run(
                [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                check=True,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout.strip()
            Path(site, "station-deps.pth").write_text("".join(f"{d}\n" for d in _site_dirs()))
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "--python",
                    str(python),
                    "install",
                    "-q",
                    "--no-index",
                    "--no-deps",
                    "--disable-pip-version-check",
                    str(wheel),
                ],
                check=True,
                capture_output=True,
                text=True,
                timeout=600,
            )
            # The install verification: the release imports, with the dependencies it finds, at the version it says.
            found = subprocess.run(
                # -I: not the working directory's `station` (a source tree) but the venv's
                [str(python), "-I", "-c", "import station, station.app; print(station.__version__)"],
                capture_output=True,
                cwd=target,
                text=True,
                timeout=120,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            shutil.rmtree(target, ignore_errors=True)
            detail = getattr(exc, "stderr", "") or str(exc)
            raise InstallFailed(f"making the venv {target} failed: {str(detail)[-300:]}") from None
        if found.returncode != 0 or found.stdout.strip() != version:
            shutil.rmtree(target, ignore_errors=True)
            raise InstallFailed(
                f"the installed release does not import as version {version}: {(found.stderr or found.stdout)[-300:]}"
            )
        (target / INSTALLING).unlink()
        return target

    def switch(self, target: Path) -> Path:
        """`current` -> target, `previous` -> what current was; each an atomic rename. Returns the previous one."""
        previous = self.current()
        self._set_link("previous", previous)
        self._set_link("current", target)
        return previous

    def _set_link(self, name: str, target: Path) -> None:
        new = self.root / f".{name}.new"
        new.unlink(missing_ok=True)
        new.symlink_to(target)
        os.replace(new, self.root / name)
        _fsync_dir(self.root)


def copy_store(store_path: Path, copy: Path) -> int:
    """A consistent copy of the live store (SQLite's backup API, beside WAL writers); its schema version."""
    copy.unlink(missing_ok=True)
    source = sqlite3.connect(store_path)
    try:
        dest = sqlite3.connect(copy)
        try:
            source.backup(dest)
        finally:
            dest.close()
        return int(source.execute("PRAGMA user_version").fetchone()[0])
    finally:
        source.close()


def store_schema(store_path: Path) -> int:
    db = sqlite3.connect(store_path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def roll_back(releases: Releases, state_dir: Path, pending: Pending, reason: str) -> None:
    """Back to the release the install replaced; the record stays for that one to report `reason`."""
    releases._set_link("current", Path(pending.previous))
    pending.state, pending.reason = "rolled_back", reason
    save_pending(state_dir, pending)
    log.error("firmware release rolled back", version=pending.version, previous=pending.previous, reason=reason)


def restore_store(pending: Pending, store_path: Path, supported: int) -> None:
    """Before the store opens: after a rollback to a release whose migrations stop at `supported`, a store the new
    release migrated further is set aside (`<store>.from-<version>`) and the copy made before the switch put back."""
    copy = Path(pending.store_copy)
    if pending.state != "rolled_back" or not copy.exists() or not store_path.exists():
        return
    if store_schema(store_path) <= supported:
        return
    aside = store_path.with_name(f"{store_path.name}.from-{pending.version}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{store_path}{suffix}")
        if src.exists():
            os.replace(src, f"{aside}{suffix}")
    shutil.copy2(copy, store_path)
    log.warning("store put back as it was before the rolled-back release", kept_aside=str(aside))


def preflight(releases: Releases, state_dir: Path, max_boots: int) -> str:
    """ExecStartPre: one more start of a new release that has not booted yet; rolled back after `max_boots`."""
    pending = load_pending(state_dir)
    if pending is None or pending.state != "booting":
        return "nothing to do"
    if releases.current().resolve() != Path(pending.target).resolve():
        return "the new release is not the current one"
    pending.boots += 1
    if pending.boots > max_boots:
        roll_back(releases, state_dir, pending, "InstallationFailed")
        return f"release {pending.version} did not boot in {max_boots} starts: rolled back to {pending.previous}"
    save_pending(state_dir, pending)
    return f"start {pending.boots} of {max_boots} of release {pending.version}"
