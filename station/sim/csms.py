"""`station sim csms`: the project's LocalCsms on 127.0.0.1, for a person to drive a station by hand.

Running, it prints every CALL a station sends (and connects/disconnects) on its terminal and takes commands there
(`remote-start --id-tag T1`, `set HeartbeatInterval 60`, ...) and from a second invocation
(`station sim csms remote-start ...`) over a control socket: a Unix socket in a directory only its user may enter,
one JSON request and one JSON answer per line, bounded in size and nesting, idle clients timed out. It owns that
socket and the command vocabulary; the OCPP side is LocalCsms's public methods and its stations' `call()`. It never
listens beyond loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import os
import shlex
import socket
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from station.sim.commands import COMMANDS

if TYPE_CHECKING:
    from station.demo.csms import LocalCsms, Received

MAX_CONTROL_LINE = 65536  # a `call` payload (e.g. SendLocalList) may be long; bounded all the same
MAX_CONTROL_DEPTH = 32
CONTROL_IDLE_TIMEOUT = 60.0
MAX_CONTROL_CLIENTS = 8


def _dest(flags: tuple[str, ...], options: dict[str, Any]) -> str:
    return str(options.get("dest") or flags[0].lstrip("-").replace("-", "_"))


def request_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The control request for a parsed `station sim csms COMMAND ...` (or a line typed at the CSMS's prompt)."""
    name = args.csms_command
    [(_, _, arguments)] = [c for c in COMMANDS if c[0] == name]
    request: dict[str, Any] = {"command": name}
    for flags, options in arguments:
        request[_dest(flags, options)] = getattr(args, _dest(flags, options))
    return request


def control_path(port: int, control: str | None = None) -> str:
    """The running CSMS's control socket: given, or one per port in a directory of this user's."""
    if control:
        return control
    return str(Path(tempfile.gettempdir()) / f"station-sim-csms-{os.getuid()}" / f"{port}.sock")


class ControlError(Exception):
    pass


def ask(path: str, request: dict[str, Any], timeout: float = 90.0) -> dict[str, Any]:
    """Send one command to the running CSMS and return its answer (raises ControlError with the reason)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(json.dumps(request).encode() + b"\n")
            line = sock.makefile("rb").readline(MAX_CONTROL_LINE * 16)
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(
            f"no CSMS is running with the control socket {path}: start `station sim csms` (same --port) first"
        ) from None
    except OSError as exc:
        raise ControlError(f"cannot talk to the CSMS at {path}: {exc}") from None
    if not line:
        raise ControlError("the CSMS closed the connection without an answer")
    answer: dict[str, Any] = json.loads(line)
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error", "the CSMS refused the command")))
    return answer


# --------------------------------------------------------------------------- printing


def format_received(item: dict[str, Any]) -> str:
    payload = json.dumps(item["payload"], separators=(",", ":"), ensure_ascii=False)
    return f"{item['at'][11:19]}  {item['station']} -> {item['action']} {payload}"


def print_answer(request: dict[str, Any], answer: dict[str, Any], out: TextIO) -> None:
    command = request["command"]
    if command == "stations":
        if not answer["stations"]:
            print("no station connected", file=out)
        for s in answer["stations"]:
            print(f"{s['id']}  OCPP {s['ocpp']}", file=out)
    elif command == "received":
        if not answer["received"]:
            print("nothing received yet", file=out)
        for item in answer["received"]:
            print(format_received(item), file=out)
    elif command == "get":
        for key, value in answer["values"].items():
            print(f"{key} = {value}", file=out)
    else:
        result = json.dumps(answer["result"], separators=(",", ":"), ensure_ascii=False)
        print(f"{answer['station']}: {answer['action']} -> {answer.get('status') or result}", file=out)


# --------------------------------------------------------------------------- the running CSMS


def _received_json(r: Received) -> dict[str, Any]:
    return {"at": r.at.isoformat(), "station": r.station_id, "action": r.action, "payload": r.payload}


def _as_json(value: Any) -> Any:
    from ocpp.charge_point import remove_nones, snake_to_camel_case

    if is_dataclass(value) and not isinstance(value, type):
        return remove_nones(snake_to_camel_case(asdict(value)))
    return value


class Controller:
    """Carries out one command on the running CSMS; every failure is an answer, never an exception."""

    def __init__(self, csms: LocalCsms) -> None:
        self.csms = csms
        self._remote_start_ids = itertools.count(1)

    def _station(self, given: object) -> str:
        connected = sorted(self.csms.stations)
        if given:
            if given not in self.csms.stations:
                raise ValueError(f"station {given} is not connected (connected: {', '.join(connected) or 'none'})")
            return str(given)
        if not connected:
            raise ValueError("no station is connected yet")
        if len(connected) > 1:
            raise ValueError(f"several stations are connected ({', '.join(connected)}); give --station")
        return connected[0]

    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            return {"ok": True, **await self._run(request)}
        except Exception as exc:  # the station's CALLERROR, a timeout, bad arguments: all answers to the user
            text = str(exc) or type(exc).__name__
            return {"ok": False, "error": f"{type(exc).__name__}: {text}"[:2000]}

    async def _run(self, r: dict[str, Any]) -> dict[str, Any]:
        from ocpp.charge_point import camel_to_snake_case
        from ocpp.v16 import call
        from ocpp.v201 import call as call201

        command = r.get("command")
        csms = self.csms
        if command == "stations":
            return {"stations": [{"id": sid, "ocpp": side.version} for sid, side in sorted(csms.stations.items())]}
        if command == "received":
            last = r.get("last", 20)
            if not isinstance(last, int) or not 0 < last <= 10000:
                raise ValueError("--last must be 1..10000")
            items = [x for x in csms.received if not r.get("action") or x.action == r["action"]]
            return {"received": [_received_json(x) for x in items[-last:]]}
        known = [c[0] for c in COMMANDS]
        if command not in known:
            raise ValueError(f"unknown command {command!r}; known: {', '.join(known)}")
        sid = self._station(r.get("station"))
        v201 = csms.version_of(sid) == "2.0.1"
        side = csms.stations[sid]
        if command == "remote-start":
            connector, id_tag = int(r.get("connector") or 1), str(r.get("id_tag") or "T1")
            if v201:
                status = await csms.request_start(sid, id_tag, connector, next(self._remote_start_ids))
                return self._done(sid, "RequestStartTransaction", status)
            return self._done(sid, "RemoteStartTransaction", await csms.remote_start(sid, id_tag, connector))
        if command == "remote-stop":
            transaction = r.get("transaction") or self._last_transaction(v201)
            if v201:
                return self._done(sid, "RequestStopTransaction", await csms.request_stop(sid, str(transaction)))
            return self._done(sid, "RemoteStopTransaction", await csms.remote_stop(sid, int(transaction)))
        if command == "set":
            key, value = str(r["key"]), str(r["value"])
            if v201:
                [result] = await csms.set_variables(sid, [{**_variable(key), "attribute_value": value}])
                return self._done(sid, "SetVariables", result["attribute_status"], result)
            return self._done(sid, "ChangeConfiguration", await csms.change_configuration(sid, key, value))
        if command == "get":
            keys = [str(k) for k in r.get("keys") or []]
            if v201:
                if not keys:
                    raise ValueError("name the variables to read, e.g. get OCPPCommCtrlr.HeartbeatInterval")
                results = await csms.get_variables(sid, [_variable(k) for k in keys])
                values = {
                    k: x.get("attribute_value", f"({x['attribute_status']})")
                    for k, x in zip(keys, results, strict=True)
                }
                return {"station": sid, "values": values}
            return {"station": sid, "values": await csms.get_configuration(sid, keys or None)}
        if command == "trigger":
            message, about = str(r["message"]), r.get("connector")
            if v201:
                payload: Any = call201.TriggerMessage(
                    requested_message=message, evse={"id": int(about)} if about else None
                )
            else:
                payload = call.TriggerMessage(requested_message=message, connector_id=about)
            result = await side.call(payload, suppress=False)
            return self._done(sid, "TriggerMessage", str(result.status), result)
        # call ACTION PAYLOAD
        action = str(r["action"])
        body = json.loads(r.get("payload") or "{}")
        if not isinstance(body, dict):
            raise ValueError("the payload must be a JSON object")
        module = call201 if v201 else call
        cls = getattr(module, action, None)
        if cls is None or not isinstance(cls, type):
            raise ValueError(f"OCPP {side.version} has no CSMS-initiated action {action!r}")
        result = await side.call(cls(**camel_to_snake_case(body)), suppress=False)
        return self._done(sid, action, str(getattr(result, "status", "") or ""), result)

    def _last_transaction(self, v201: bool) -> str:
        started = self.csms.started_transactions if v201 else self.csms.assigned_transaction_ids
        if not started:
            raise ValueError("no transaction has started yet; give --transaction ID")
        return str(started[-1])

    @staticmethod
    def _done(sid: str, action: str, status: str, result: Any = None) -> dict[str, Any]:
        return {"station": sid, "action": action, "status": status, "result": _as_json(result) or {"status": status}}


def _variable(name: str) -> dict[str, Any]:
    """'Component.Variable' (or 'Component.Variable.Instance') as a 2.0.1 component/variable pair."""
    component, sep, variable = name.partition(".")
    if not sep or not component or not variable:
        raise ValueError(f"{name!r}: give a 2.0.1 variable as Component.Variable, e.g. OCPPCommCtrlr.HeartbeatInterval")
    variable, _, instance = variable.partition(".")
    var: dict[str, Any] = {"name": variable}
    if instance:
        var["instance"] = instance
    return {"component": {"name": component}, "variable": var}


class _ConsoleParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise ValueError(message)

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        raise ValueError(message or "")


def console_parser() -> argparse.ArgumentParser:
    """The commands typed at the running CSMS's prompt: the same words as `station sim csms COMMAND`."""
    parser = _ConsoleParser(prog="", add_help=False)
    sub = parser.add_subparsers(dest="csms_command", metavar="COMMAND", parser_class=_ConsoleParser)
    for name, help, arguments in COMMANDS:
        c = sub.add_parser(name, help=help, add_help=False)
        for flags, options in arguments:
            c.add_argument(*flags, **options)
    return parser


def console_help() -> str:
    width = max(len(c[0]) for c in COMMANDS)
    lines = [f"  {name:<{width}}  {help}" for name, help, _ in COMMANDS]
    return "commands (also from another terminal as `station sim csms COMMAND`):\n" + "\n".join(lines)


async def _serve_control(controller: Controller, path: Path) -> asyncio.AbstractServer:
    from station.diag.server import too_deep

    clients = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal clients
        try:
            if clients >= MAX_CONTROL_CLIENTS:
                answer: dict[str, Any] = {"ok": False, "error": "too many control clients at once"}
            else:
                clients += 1
                try:
                    line = await asyncio.wait_for(reader.readline(), CONTROL_IDLE_TIMEOUT)
                    if too_deep(line, MAX_CONTROL_DEPTH):
                        answer = {"ok": False, "error": f"request nested deeper than {MAX_CONTROL_DEPTH} levels"}
                    else:
                        request = json.loads(line)
                        if not isinstance(request, dict):
                            raise ValueError("not an object")
                        answer = await controller.run(request)
                except TimeoutError:
                    answer = {"ok": False, "error": "no request in time"}
                except ValueError as exc:  # over-long line, not JSON
                    answer = {"ok": False, "error": f"bad request: {exc}"[:200]}
                finally:
                    clients -= 1
            writer.write(json.dumps(answer, default=str).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), CONTROL_IDLE_TIMEOUT)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)  # only this user may reach the socket: it can start and stop charging
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return await asyncio.start_unix_server(handle, path=str(path), limit=MAX_CONTROL_LINE)


def _stdin_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    """A daemon thread: it never keeps the process alive at Ctrl-C, unlike asyncio's executor."""

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="sim csms console", daemon=True).start()


class _Terminal:
    """The CSMS's own terminal. Printing never raises into the CSMS: when the reader is gone (`| head`), the CSMS
    stops quietly, as every station command does on a closed pipe."""

    def __init__(self, out: TextIO, gone: Callable[[], None]) -> None:
        self.out = out
        self.closed = False
        self._gone = gone

    def say(self, text: str) -> None:
        if self.closed:
            return
        try:
            print(text, file=self.out, flush=True)
        except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
            self.closed = True
            self._gone()

    def answer(self, request: dict[str, Any], answer: dict[str, Any]) -> None:
        buffer = io.StringIO()
        print_answer(request, answer, buffer)
        self.say(buffer.getvalue().rstrip("\n"))


async def _console(controller: Controller, terminal: _Terminal) -> None:
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    _stdin_lines(asyncio.get_running_loop(), queue)
    parser = console_parser()
    while (line := await queue.get()) is not None:
        try:
            words = shlex.split(line, comments=True)
            if not words:
                continue
            if words[0] in ("help", "?"):
                terminal.say(console_help())
                continue
            request = request_from_args(parser.parse_args(words))
        except ValueError as exc:
            terminal.say(f"? {exc} (`help` lists the commands)")
            continue
        answer = await controller.run(request)
        if answer["ok"]:
            terminal.answer(request, answer)
        else:
            terminal.say(f"! {answer['error']}")


async def serve(port: int, *, control: str | None = None, versions: str = "both", out: TextIO | None = None) -> int:
    """Run the CSMS until SIGINT/SIGTERM (exit 0) or until its output is gone (exit 141): print what stations send,
    take commands on stdin and the control socket."""
    import signal

    from station.demo.csms import LocalCsms

    stop = asyncio.Event()
    terminal = _Terminal(out or sys.stdout, stop.set)
    subprotocols = {"1.6": ("ocpp1.6",), "2.0.1": ("ocpp2.0.1",), "both": ("ocpp1.6", "ocpp2.0.1")}[versions]

    class _PrintingCsms(LocalCsms):
        async def _handle(self, connection: Any) -> None:
            path = connection.request.path if connection.request else "/"
            who = path.rstrip("/").rsplit("/", 1)[-1]
            terminal.say(f"-- {who} connected ({connection.subprotocol or 'no common OCPP version'})")
            try:
                await super()._handle(connection)
            finally:
                terminal.say(f"-- {who} disconnected")

    csms = _PrintingCsms(port=port, subprotocols=subprotocols)
    csms.listeners.append(lambda r: terminal.say(format_received(_received_json(r))))
    await csms.start()
    controller = Controller(csms)
    path = Path(control_path(port, control))
    server = await _serve_control(controller, path)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    console = asyncio.create_task(_console(controller, terminal), name="sim csms console")
    try:
        terminal.say(f"CSMS listening on {csms.url} (OCPP {versions}); stations connect to {csms.url}/<station id>")
        terminal.say(f"control socket {path}; type `help` for the commands, Ctrl-C stops")
        await stop.wait()
    finally:
        console.cancel()
        server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        await csms.stop()
    if terminal.closed:
        raise BrokenPipeError  # the command line's quiet exit on a closed pipe
    return 0
