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


# Issue 22: `station run` imports only what its configuration uses. Loaded when needed: aiohttp (the firmware download,
# the log upload and the technician web page), tarfile (a log archive), the technician socket, the demo CSMS, and each
# OCPP version's adapter with the `ocpp` library's message classes (once the CSMS has picked the version).
NOT_AT_START_UP = (
    "aiohttp",
    "tarfile",
    "station.diag.server",
    "station.diag.webpage",
    "station.demo",
    "station.ocpp.v16",
    "station.ocpp.v201",
    "ocpp.v16",
    "ocpp.v201",
)


def test_the_daemon_starts_without_what_its_configuration_does_not_use() -> None:
    code = (
        "import sys, station.app, station.cli;"
        f"names = {NOT_AT_START_UP!r};"
        "print(sorted(m for m in sys.modules if m in names or m.startswith(tuple(n + '.' for n in names))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_a_version_is_imported_when_the_csms_picks_it() -> None:
    code = (
        "import sys\n"
        "from station.ocpp.connection import V16_SUBPROTOCOL, V201_SUBPROTOCOL, adapter_class\n"
        "from station.ocpp.adapter import known_actions\n"
        "v16 = adapter_class(V16_SUBPROTOCOL)\n"
        "assert 'BootNotification' in known_actions('1.6') and 'TransactionEvent' not in known_actions('1.6')\n"
        "print(v16.version, 'ocpp.v201' in sys.modules, 'station.ocpp.v201' in sys.modules)\n"
        "import station.ocpp.v16, station.ocpp.v201\n"
        "assert (V16_SUBPROTOCOL, V201_SUBPROTOCOL) == (station.ocpp.v16.SUBPROTOCOL, station.ocpp.v201.SUBPROTOCOL)\n"
        "assert adapter_class(V201_SUBPROTOCOL) is station.ocpp.v201.V201Adapter\n"
        "assert v16 is station.ocpp.v16.V16Adapter\n"
        "assert 'TransactionEvent' in known_actions('2.0.1')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1.6", "False", "False"], out


# Issue 22: what a station with real meters loads once it runs. Its start-up once imported pymodbus's server (which
# loads aiohttp for pymodbus's HTTP simulator: +0.19 s and +10 MB) and the simulators before it looked whether any bus
# is simulated; now that happens only for a `transport = "simulated"` bus.
SIMULATOR_ONLY = ("station.meter.sim", "station.meter.nullmodem", "pymodbus.server", "aiohttp")


def test_a_station_with_real_meters_starts_no_simulator_line() -> None:
    code = (
        "import asyncio, sys\n"
        "from station.app import start_simulated_lines\n"
        "from station.config import parse_config\n"
        "config = parse_config({'station': {'id': 'CP'}, 'csms': {'url': 'ws://127.0.0.1:1/ocpp'},\n"
        "    'meter': {'transport': 'rtu', 'port': '/dev/null'}, 'storage': {'path': '/tmp/unused.db'}})\n"
        "assert asyncio.run(start_simulated_lines(config)) == {}\n"
        f"names = {SIMULATOR_ONLY!r}\n"
        "print(sorted(m for m in sys.modules if m in names or m.startswith(tuple(n + '.' for n in names))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_every_command_builds_its_parser_without_the_csms_simulator() -> None:
    """`station run` builds the whole command line, `station sim csms` with it: from the commands as data
    (station.sim.commands), not from the simulator with its control socket (tempfile, random, shlex: +0.5 MB)."""
    code = (
        "import sys\n"
        "import station.cli\n"
        "sys.argv = ['station', 'sim', 'csms', '--help']\n"
        "try:\n"
        "    station.cli.main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('station.sim') or m in ('tempfile', 'shlex')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "['station.sim', 'station.sim.commands']", out
