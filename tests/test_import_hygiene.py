"""Production wiring never loads the simulators (issue 17 item 7): a station with real meters imports no
`station.meter.sim` module and no virtual cable; they are imported only when a bus is `transport = "simulated"`."""

from __future__ import annotations

import subprocess
import sys


def test_the_daemons_wiring_imports_no_simulator() -> None:
    code = (
        "import sys, station.app, station.cli;"
        "print(sorted(m for m in sys.modules if m.startswith(('station.meter.sim', 'station.meter.nullmodem'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
