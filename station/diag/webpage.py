"""The technician's web page: the same status as `station diag status`, a live power/energy chart of the running
transaction, and the transaction list with verification results. Read-only.

A small HTTP/1.1 server on asyncio streams (one request per connection, GET only), bound to the address in
`[diagnostics] http` (127.0.0.1 or the board's service interface), behind HTTP Basic auth with
`[diagnostics] http_password`. Wrong passwords are rate-limited per client address and in total. The page is three
static files (`web/`), no build step and nothing loaded from elsewhere; a strict Content-Security-Policy says so.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import structlog

from station.diag.server import recent_reports, status_report

if TYPE_CHECKING:
    from station.app import Station

log = structlog.get_logger("station.diag.web")

WEB = Path(__file__).parent / "web"
FILES = {
    "/": ("index.html", "text/html"),
    "/app.js": ("app.js", "text/javascript"),
    "/style.css": ("style.css", "text/css"),
}
MAX_HEAD = 8192
FAILURES_PER_ADDRESS = 5  # wrong passwords per client address per window before it is refused
FAILURES_TOTAL = 20  # wrong passwords from everywhere per window before everyone is refused
WINDOW_S = 60.0
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class LiveSeries:
    """Power and energy of the running transaction, sampled from what the daemon reads anyway (no extra Modbus)."""

    ref: str | None = None
    points: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=2000))  # t, W, Wh
    _last: object = None

    def sample(self, station: Station) -> None:
        tx = next((c.transaction for c in station.runtime.core.connectors.values() if c.transaction), None)
        if tx is None or tx.meter_start_wh is None:
            self.ref, self._last = None, None
            self.points.clear()
            return
        if tx.ref != self.ref:
            self.ref = tx.ref
            self.points.clear()
        live = station.runtime.meter_state.live
        if live is None or live is self._last:
            return
        self._last = live
        self.points.append((time.time(), live.power_w, float(live.energy_import_wh - tx.meter_start_wh)))

    def as_json(self) -> dict[str, Any]:
        return {"transaction": self.ref, "points": [{"t": t, "power_w": w, "energy_wh": e} for t, w, e in self.points]}


class RateLimit:
    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    def _trim(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - WINDOW_S:
            times.popleft()

    def blocked_for(self, address: str) -> float:
        """Seconds this address must wait before it may try a password again (0: it may)."""
        now = time.monotonic()
        mine = self._failures.get(address, deque())
        self._trim(mine, now)
        self._trim(self._all, now)
        if len(mine) >= FAILURES_PER_ADDRESS:
            return mine[0] + WINDOW_S - now
        if len(self._all) >= FAILURES_TOTAL:
            return self._all[0] + WINDOW_S - now
        return 0.0

    def failed(self, address: str) -> None:
        now = time.monotonic()
        self._failures.setdefault(address, deque()).append(now)
        self._all.append(now)
        if len(self._failures) > 1000:  # forget the quiet ones; memory stays bounded
            for key in [k for k, v in self._failures.items() if not v or v[-1] <= now - WINDOW_S]:
                del self._failures[key]


@dataclass(frozen=True)
class Reply:
    status: HTTPStatus
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json(value: Any, status: HTTPStatus = HTTPStatus.OK) -> Reply:
    return Reply(status, json.dumps(value, default=str).encode())


def _error(status: HTTPStatus, text: str, **headers: str) -> Reply:
    return Reply(status, (text + "\n").encode(), "text/plain", headers)


class DiagnosticsPage:
    def __init__(self, station: Station, address: str, password: str, sample_interval: float = 1.0) -> None:
        host, _, port = address.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.station = station
        self._password = password.encode()
        self.limits = RateLimit()
        self.live = LiveSeries()
        self.sample_interval = sample_interval
        self._server: asyncio.Server | None = None
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        self._sampler = asyncio.create_task(self._sample(), name="diag page live series")
        log.info("diagnostics page listening", url=f"http://{self.host}:{self.port}/")

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _sample(self) -> None:
        while True:
            self.live.sample(self.station)
            await asyncio.sleep(self.sample_interval)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) else "local"
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, target, headers = _parse_head(head)
            reply = self.handle(method, target, headers, address)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        except ValueError as exc:
            reply = _error(HTTPStatus.BAD_REQUEST, f"bad request: {exc}")
            method = "GET"
        try:
            writer.write(_render(reply, with_body=method != "HEAD"))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def handle(self, method: str, target: str, headers: dict[str, str], address: str) -> Reply:
        if method not in ("GET", "HEAD"):
            return _error(HTTPStatus.METHOD_NOT_ALLOWED, "this page only reads", Allow="GET, HEAD")
        wait = self.limits.blocked_for(address)
        if wait > 0:
            return _error(
                HTTPStatus.TOO_MANY_REQUESTS,
                f"too many wrong passwords; wait {wait:.0f} s",
                **{"Retry-After": f"{wait:.0f}"},
            )
        if not self._authorised(headers.get("authorization", "")):
            if headers.get("authorization"):
                self.limits.failed(address)
                log.warning("diagnostics page: wrong password", client=address)
            return _error(
                HTTPStatus.UNAUTHORIZED,
                "the technician password is needed",
                **{"WWW-Authenticate": 'Basic realm="station diagnostics", charset="UTF-8"'},
            )
        url = urlsplit(target)
        if url.path in FILES:
            name, content_type = FILES[url.path]
            return Reply(HTTPStatus.OK, (WEB / name).read_bytes(), f"{content_type}; charset=utf-8")
        if url.path == "/api/status":
            return _json(status_report(self.station))
        if url.path == "/api/transactions":
            query = parse_qs(url.query)
            try:
                last = int(query.get("last", ["20"])[0])
            except ValueError:
                return _error(HTTPStatus.BAD_REQUEST, "last must be an integer 1..200")
            if not 1 <= last <= 200:
                return _error(HTTPStatus.BAD_REQUEST, "last must be an integer 1..200")
            return _json(recent_reports(self.station, last))
        if url.path == "/api/live":
            return _json({**self.live.as_json(), "now": datetime.now(UTC).isoformat()})
        return _error(HTTPStatus.NOT_FOUND, f"nothing at {url.path}")

    def _authorised(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            _, _, password = base64.b64decode(value.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(password, self._password)


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    try:
        lines = head.decode("iso-8859-1").split("\r\n")
    except UnicodeDecodeError:
        raise ValueError("not HTTP") from None
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError("expected 'METHOD /path HTTP/1.1'")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"malformed header line {line[:40]!r}")
            headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], headers


def _render(reply: Reply, *, with_body: bool) -> bytes:
    head = [f"HTTP/1.1 {reply.status.value} {reply.status.phrase}"]
    headers = {
        "Content-Type": reply.content_type,
        "Content-Length": str(len(reply.body)),
        "Connection": "close",
        **SECURITY_HEADERS,
        **reply.headers,
    }
    head.extend(f"{k}: {v}" for k, v in headers.items())
    return ("\r\n".join(head) + "\r\n\r\n").encode("iso-8859-1") + (reply.body if with_body else b"")
