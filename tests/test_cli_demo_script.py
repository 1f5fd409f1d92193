"""`sh scripts/demo` (issue 16 item 10): the real script, run twice in a copy of the repository's layout whose venv
records what is asked of it. A second run does not reinstall; a changed pyproject.toml or a lost command does."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_scripts_demo_reinstalls_only_when_pyproject_changed(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "demo", tmp_path / "scripts" / "demo")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    calls = tmp_path / "calls.log"
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    # A venv whose python and station say what they were asked to do (pip "installs" the station command).
    (bin_dir / "python").write_text(
        f'#!/bin/sh\necho "python $*" >> {calls}\n'
        f'[ "$2" = pip ] && printf \'#!/bin/sh\\necho "station $*" >> {calls}\\n\' > {bin_dir}/station '
        f"&& chmod +x {bin_dir}/station\nexit 0\n"
    )
    (bin_dir / "python").chmod(0o755)

    def run() -> list[str]:
        calls.write_text("")
        subprocess.run(["sh", str(tmp_path / "scripts" / "demo"), "--json"], check=True, timeout=60, cwd="/")
        return calls.read_text().splitlines()

    first = run()
    assert any("-m pip install" in line for line in first) and first[-1] == "station demo --json"
    assert run() == ["station demo --json"]  # nothing changed: no install
    with (tmp_path / "pyproject.toml").open("a") as f:
        f.write("\n# a new dependency\n")
    assert any("-m pip install" in line for line in run())
    assert run() == ["station demo --json"]
    (bin_dir / "station").unlink()
    assert any("-m pip install" in line for line in run())
