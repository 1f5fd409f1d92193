"""`station sim ev --socket PATH plug|unplug|ready|suspend|card UID|fault NAME|clear [NAME]|state [--json]`: drive the
simulated car, faults and card reader of a running station's `driver = "simulated"` EVSE through its control socket
(`control_socket = PATH` in its `[charge_controller]`).

Exit status: 0 done, 1 the simulation refused (e.g. `ready` with no car plugged in; the message says why), 2 wrong
arguments or no simulated controller at PATH. A client only: the socket belongs to the station's simulated
controller (station/ev/sim/control.py).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any, TextIO

from station.ev.sim.control import MAX_REQUEST_BYTES

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
MAX_ANSWER_BYTES = 65536

PILOT_MEANING = {
    "A": "no vehicle",
    "B": "vehicle connected, not asking for power",
    "C": "vehicle asks for power",
    "D": "vehicle asks for power, with ventilation",
    "E": "no pilot (short circuit, EVSE off)",
    "F": "EVSE not available",
}


class NoController(Exception):
    """Nothing answers at the socket path (the station is not running, or its EVSE is not simulated)."""


class Refused(Exception):
    """The simulation refused the request; the message is its reason."""


def ask(path: str, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """One request to the simulated controller at `path`; its answer, or NoController / Refused with the reason."""
    line = json.dumps(request).encode() + b"\n"
    if len(line) > MAX_REQUEST_BYTES:
        raise Refused(f"request longer than {MAX_REQUEST_BYTES} bytes")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(line)
            raw = sock.makefile("rb").readline(MAX_ANSWER_BYTES)
    except (FileNotFoundError, ConnectionRefusedError):
        raise NoController(
            f"no simulated charge controller listens at {path}: is the station running with "
            f'`driver = "simulated"` and `control_socket = "{path}"`?'
        ) from None
    except OSError as exc:
        raise NoController(f"cannot talk to the simulated charge controller at {path}: {exc}") from None
    if not raw:
        raise NoController(f"the simulated charge controller at {path} closed the connection without an answer")
    try:
        answer = json.loads(raw)
    except ValueError:
        raise NoController(f"the answer from {path} is not JSON: {raw[:80]!r}") from None
    if not isinstance(answer, dict):
        raise NoController(f"the answer from {path} is not a JSON object")
    if not answer.get("ok"):
        raise Refused(str(answer.get("error", "refused")))
    return answer


def request_from_args(args: argparse.Namespace) -> dict[str, Any]:
    request: dict[str, Any] = {"cmd": args.ev_command}
    if args.ev_command == "card":
        request["uid"] = args.uid
    elif args.ev_command == "fault":
        request["name"] = args.name
        if args.detail:
            request["detail"] = args.detail
    elif args.ev_command == "clear" and args.name:
        request["name"] = args.name
    return request


def format_state(state: dict[str, Any]) -> str:
    faults = state.get("faults") or {}
    limit = state.get("current_limit_a", 0.0)
    duty = state.get("duty_cycle_pct")
    pwm = "PWM off" if duty in (None, 100.0) else f"PWM {duty:g} %"
    lines = [
        f"car      {state.get('car')}",
        f"pilot    {state.get('pilot')} ({PILOT_MEANING.get(str(state.get('pilot')), '?')})",
        f"relay    {state.get('relay')}" + ("" if state.get("power_allowed") else " (power not allowed)"),
        f"lock     {state.get('lock')}",
        f"current  {limit:g} A ({pwm})",
        f"power    {state.get('power_w', 0.0):.0f} W",
        "faults   " + (", ".join(f"{k} ({v})" for k, v in faults.items()) if faults else "none"),
    ]
    if not state.get("online", True):
        lines.append("online   no (the station has not opened it, or it is silent)")
    return "\n".join(lines)


def print_answer(request: dict[str, Any], answer: dict[str, Any], out: TextIO) -> None:
    cmd = request["cmd"]
    if cmd == "card":
        print(f"card {answer.get('uid')} presented", file=out)
    elif cmd == "fault":
        print(f"fault {answer.get('fault')} injected", file=out)
    elif cmd == "clear":
        cleared = answer.get("cleared") or []
        print("cleared " + (", ".join(cleared) if cleared else "nothing (no fault was active)"), file=out)
    elif cmd != "state":
        print(f"{cmd}: done", file=out)
    print(format_state(answer.get("state") or {}), file=out)


def run(args: argparse.Namespace) -> int:
    if not args.socket:
        print("sim ev: --socket PATH is needed (the EVSE's `control_socket`)", file=sys.stderr)
        return EXIT_USAGE
    request = request_from_args(args)
    try:
        answer = ask(args.socket, request)
    except NoController as exc:
        print(f"sim ev: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Refused as exc:
        print(f"sim ev: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if args.json:
        print(json.dumps(answer["state"] if request["cmd"] == "state" else answer, indent=2))
    else:
        print_answer(request, answer, sys.stdout)
    return EXIT_OK
