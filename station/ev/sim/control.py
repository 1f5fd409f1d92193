"""The simulated charge controller's control socket: how `station sim ev` (or a test, or the demo) drives the car,
the faults and the card reader of a running station's simulated EVSE.

A Unix socket at the configured path, mode 0600 (only its user may connect: it can make power flow), made by the
simulated controller when it opens and removed when it closes. One JSON object per line in, one JSON object per line
out, several requests per connection:

    {"cmd": "plug"} | {"cmd": "unplug"} | {"cmd": "ready"} | {"cmd": "suspend"} | {"cmd": "state"}
    {"cmd": "card", "uid": "04A1B2C3"}
    {"cmd": "fault", "name": "rcd", "detail": "optional text"}
    {"cmd": "clear"} | {"cmd": "clear", "name": "rcd"}

    -> {"ok": true, "state": {...snapshot...}, ...}   or   {"ok": false, "error": "why"}

Bounded: a request line of at most MAX_REQUEST_BYTES, at most MAX_CLIENTS connections at once, a connection idle for
IDLE_TIMEOUT_S is closed. Garbage (not JSON, not an object, unknown command or key, wrong types) gets an error answer,
never a crash; an over-long line gets one and the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
from typing import TYPE_CHECKING, Any

import structlog

from station.ev.sim.car import Refused

if TYPE_CHECKING:
    from station.ev.simulated import SimulatedController

log = structlog.get_logger("station.ev.sim.control")

MAX_REQUEST_BYTES = 1024
MAX_CLIENTS = 4
IDLE_TIMEOUT_S = 30.0
MAX_DEPTH = 2  # requests are flat objects
MAX_UID_CHARS = 64
MAX_DETAIL_CHARS = 200

# command -> {key: required?}
COMMANDS: dict[str, dict[str, bool]] = {
    "plug": {},
    "unplug": {},
    "ready": {},
    "suspend": {},
    "card": {"uid": True},
    "fault": {"name": True, "detail": False},
    "clear": {"name": False},
    "state": {},
}


def parse_request(line: bytes) -> dict[str, Any]:
    """One request line as a checked request; Refused saying what is wrong with it."""
    from station.diag.server import too_deep  # one pass over the bytes: the parser never sees a deep request

    if too_deep(line, MAX_DEPTH):
        raise Refused("bad request: a request is one flat JSON object")
    try:
        request = json.loads(line)
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON
        raise Refused(f"bad request: not JSON ({exc})"[:200]) from None
    if not isinstance(request, dict):
        raise Refused("bad request: not a JSON object")
    cmd = request.get("cmd")
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        raise Refused(f"bad request: key 'cmd' must be one of {', '.join(COMMANDS)}")
    keys = COMMANDS[cmd]
    unknown = sorted(str(k)[:40] for k in request if k != "cmd" and k not in keys)
    if unknown:
        raise Refused(f"bad request: {cmd} takes no key(s) {', '.join(unknown)}")
    limits = {"uid": MAX_UID_CHARS, "name": 40, "detail": MAX_DETAIL_CHARS}
    for key, required in keys.items():
        if key not in request:
            if required:
                raise Refused(f"bad request: {cmd} needs key {key!r}")
            continue
        value = request[key]
        if not isinstance(value, str) or len(value) > limits[key]:
            raise Refused(f"bad request: key {key!r} must be a string of at most {limits[key]} characters")
    return request


def run_request(controller: SimulatedController, request: dict[str, Any]) -> dict[str, Any]:
    """Carry out a checked request; the answer (Refused for what the simulation cannot do)."""
    cmd = request["cmd"]
    answer: dict[str, Any] = {"ok": True}
    if cmd == "plug":
        controller.plug()
    elif cmd == "unplug":
        controller.unplug()
    elif cmd == "ready":
        controller.ready()
    elif cmd == "suspend":
        controller.suspend()
    elif cmd == "card":
        answer["uid"] = controller.present_card(request["uid"])
    elif cmd == "fault":
        answer["fault"] = controller.inject(request["name"], request.get("detail", "")).value
    elif cmd == "clear":
        answer["cleared"] = [f.value for f in controller.clear(request.get("name"))]
    answer["state"] = controller.snapshot()
    return answer


def answer_line(controller: SimulatedController, line: bytes) -> dict[str, Any]:
    """The answer to one request line, whatever the line holds."""
    try:
        request = parse_request(line)
        answer = run_request(controller, request)
    except Refused as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # a bug must not take the station's controller down with it
        log.exception("ev sim control request failed", controller=controller.name)
        return {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"[:200]}
    if request["cmd"] != "state":
        log.info("ev sim control", controller=controller.name, cmd=request["cmd"])
    return answer


def _bind(path: str) -> socket.socket:
    """A listening Unix socket at `path`, mode 0600 before anyone can connect. Replaces only a stale socket; refuses
    a path that is something else or a socket someone still listens on."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise OSError(f"{path} exists and is not a socket (not removing it)")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(path)
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # stale: nobody listens
            else:
                raise OSError(f"{path} is in use (another simulated controller listens there)")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o600)  # before listen(): until then nobody can connect
        sock.listen(MAX_CLIENTS)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class ControlServer:
    def __init__(self, controller: SimulatedController, path: str) -> None:
        self.controller = controller
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        sock = _bind(self.path)
        self._inode = os.stat(self.path).st_ino
        self._server = await asyncio.start_unix_server(self._handle, sock=sock, limit=MAX_REQUEST_BYTES)
        log.info("ev sim control socket", controller=self.controller.name, path=self.path)

    async def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for writer in list(self._writers):
            writer.close()
        await server.wait_closed()
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:  # still ours, not a successor's
                os.unlink(self.path)

    async def _send(self, writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
        writer.write(json.dumps(answer, default=str).encode() + b"\n")
        await asyncio.wait_for(writer.drain(), IDLE_TIMEOUT_S)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if len(self._writers) >= MAX_CLIENTS:
                await self._send(writer, {"ok": False, "error": f"too many control clients (at most {MAX_CLIENTS})"})
                return
            self._writers.add(writer)
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT_S)
                except ValueError:  # longer than the limit: the rest of it is not worth reading
                    await self._send(writer, {"ok": False, "error": f"request longer than {MAX_REQUEST_BYTES} bytes"})
                    return
                if not line.endswith(b"\n"):  # end of input, perhaps mid-request: nothing complete to do
                    return
                if not line.strip():
                    continue
                await self._send(writer, answer_line(self.controller, line))
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
