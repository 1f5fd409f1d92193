"""The technician's web page: the same status as `station diag status`, a live power/energy chart of the running
transaction, each EVSE's charging schedule of the next 24 h, and the transaction list with verification results.
Read-only.

HTTP is aiohttp's low-level server (parsing, keep-alive, header limits, HEAD), bound to the address in
`[diagnostics] http` (127.0.0.1 or the board's service interface); what it serves is ours: GET and HEAD only, behind
HTTP Basic auth with `[diagnostics] http_password`, a strict Content-Security-Policy on every answer, and nothing
loaded from elsewhere. The page is rendered on the server (status, tables and the chart as SVG), so it shows content
before any JavaScript runs; the script refreshes it and draws the charging schedule's step charts (issue 19 part 5)
from /api/schedule, whose titles (each EVSE's limit now) are in the first paint. Wrong passwords are rate-limited
per client address with an exponential delay; one address's failures never lock out another, and a correct password
from an address that is not itself in back-off always gets in. Connections are capped in number and lifetime.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import html
import json
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from station.diag.client import limit_text
from station.diag.server import recent_reports, schedule_report, status_report

if TYPE_CHECKING:
    from station.app import Station

log = structlog.get_logger("station.diag.web")

WEB = Path(__file__).parent / "web"
FILES = {
    "/app.js": ("app.js", "text/javascript"),
    "/style.css": ("style.css", "text/css"),
}
MAX_HEAD = 8190  # longest request line / header line (aiohttp's limit, the old server's order)
MAX_HEADERS = 64
MAX_CONNECTIONS = 32  # at once; one more is closed at once
CONNECTION_LIFETIME_S = 30.0  # a connection (even a keep-alive one) is closed after this: no slow client holds one
FREE_FAILURES = 5  # wrong passwords an address may send before it must wait
FIRST_DELAY_S = 1.0  # then it waits 1, 2, 4, ... s after each further wrong password
MAX_DELAY_S = 900.0
FORGET_AFTER_S = 3600.0  # an address quiet this long starts afresh
MAX_ADDRESSES = 4096  # addresses remembered (least recently failed forgotten first): memory stays bounded
CHART_WINDOW_S = 900.0  # the chart shows at most the last 15 minutes
TIME_STEPS_S = (5, 10, 15, 30, 60, 120, 300)  # time-axis label steps that read as clock times
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Server": "station",  # not aiohttp's name and version
}


@dataclass
class LiveSeries:
    """Power and energy of the running transaction, sampled from what the daemon reads anyway (no extra Modbus)."""

    ref: str | None = None
    points: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=2000))  # t, W, Wh
    _last: object = None

    def sample(self, station: Station) -> None:
        tx = next(iter(station.runtime.core.running_transactions()), None)
        live = station.runtime.meter_state(tx.evse_id).live if tx is not None else None
        if tx is None or tx.meter_start_wh is None:
            self.ref, self._last = None, None
            self.points.clear()
            return
        if tx.ref != self.ref:
            # The reading at hand was taken before this transaction began: it would draw a step from the idle
            # values at the first sample. Wait for the first reading taken after the start.
            self.ref, self._last = tx.ref, live
            self.points.clear()
            return
        if live is None or live is self._last:
            return
        self._last = live
        energy = float(live.energy_import_wh - tx.meter_start_wh)
        if energy >= 0:
            self.points.append((time.time(), live.power_w, energy))

    def as_json(self) -> dict[str, Any]:
        return {"transaction": self.ref, "points": [{"t": t, "power_w": w, "energy_wh": e} for t, w, e in self.points]}


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0


class RateLimit:
    """Wrong passwords per client address: FREE_FAILURES free, then an exponential wait before the next attempt of
    that address is even looked at. There is no global lock-out: others' failures never refuse an address."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def blocked_for(self, address: str) -> float:
        """Seconds this address must wait before it may try a password again (0: it may)."""
        entry = self._failures.get(address)
        if entry is None or entry.count < FREE_FAILURES:
            return 0.0
        delay = min(MAX_DELAY_S, FIRST_DELAY_S * 2.0 ** (entry.count - FREE_FAILURES))
        return max(0.0, entry.last + delay - self.clock())

    def failed(self, address: str) -> None:
        now = self.clock()
        entry = self._failures.pop(address, None) or _Failures()
        if now - entry.last > FORGET_AFTER_S:
            entry = _Failures()
        entry.count += 1
        entry.last = now
        self._failures[address] = entry  # most recent last
        while len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


def _reply(status: HTTPStatus, body: bytes, content_type: str, **headers: str) -> web.Response:
    response = web.Response(status=status.value, body=body, content_type=content_type.split(";")[0])
    if "charset" in content_type:
        response.charset = "utf-8"
    response.headers.update(SECURITY_HEADERS)
    response.headers.update(headers)
    return response


def _json(value: Any) -> web.Response:
    return _reply(HTTPStatus.OK, json.dumps(value, default=str).encode(), "application/json")


def _error(status: HTTPStatus, text: str, **headers: str) -> web.Response:
    return _reply(status, (text + "\n").encode(), "text/plain; charset=utf-8", **headers)


class _BoundedServer(web.Server):
    """aiohttp's server with a cap on connections and on how long one may live (aiohttp itself has no timeout for a
    request head that arrives a byte at a time)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.saturated = False
        self._deadlines: dict[web.RequestHandler, asyncio.TimerHandle] = {}

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if len(self.connections) > MAX_CONNECTIONS:
            if not self.saturated:  # once per episode, not once per refused connection
                self.saturated = True
                log.warning("diagnostics page: too many connections", limit=MAX_CONNECTIONS)
            transport.close()
            return
        self.saturated = False
        self._deadlines[handler] = asyncio.get_running_loop().call_later(CONNECTION_LIFETIME_S, transport.close)

    def connection_lost(self, handler: web.RequestHandler, exc: BaseException | None = None) -> None:
        deadline = self._deadlines.pop(handler, None)
        if deadline is not None:
            deadline.cancel()
        super().connection_lost(handler, exc)


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
        self.server: _BoundedServer | None = None
        self._runner: web.ServerRunner | None = None
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # aiohttp logs malformed requests on its own loggers; the client gets its 400, the journal needs no line.
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
        self.server = server = _BoundedServer(
            self._handle,
            max_line_size=MAX_HEAD,
            max_field_size=MAX_HEAD,
            max_headers=MAX_HEADERS,
            keepalive_timeout=5,
            access_log=None,
        )
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._sampler = asyncio.create_task(self._sample(), name="diag page live series")
        log.info("diagnostics page listening", url=f"http://{self.host}:{self.port}/")

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _sample(self) -> None:
        while True:
            try:
                self.live.sample(self.station)
            except Exception:  # a sampling bug must not end the chart for good
                log.exception("diagnostics page: sampling failed")
            await asyncio.sleep(self.sample_interval)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.version < (1, 0):  # aiohttp takes "GET /" (HTTP/0.9, no headers) as a request
            return _error(HTTPStatus.BAD_REQUEST, "bad request: expected 'METHOD /path HTTP/1.1'")
        try:
            return self.handle(request.method, request.path_qs, request.headers, request.remote or "local")
        except Exception:
            log.exception("diagnostics page: request failed", path=request.path)
            return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (logged)")

    def handle(self, method: str, target: str, headers: Any, address: str) -> web.Response:
        if method not in ("GET", "HEAD"):
            return _error(HTTPStatus.METHOD_NOT_ALLOWED, "this page only reads", Allow="GET, HEAD")
        # Only this address's own wrong passwords can make it wait; nobody else's.
        wait = self.limits.blocked_for(address)
        if wait > 0:
            return _error(
                HTTPStatus.TOO_MANY_REQUESTS,
                f"too many wrong passwords from {address}; wait {math.ceil(wait)} s",
                **{"Retry-After": str(math.ceil(wait))},
            )
        authorization = headers.get("Authorization", "")
        if not self._authorised(authorization):
            if authorization:
                self.limits.failed(address)
                log.warning("diagnostics page: wrong password", client=address)
            return _error(
                HTTPStatus.UNAUTHORIZED,
                "the technician password is needed",
                **{"WWW-Authenticate": 'Basic realm="station diagnostics", charset="UTF-8"'},
            )
        self.limits.succeeded(address)
        path, _, query = target.partition("?")
        if path == "/":
            return _reply(HTTPStatus.OK, render_page(self.station, self.live).encode(), "text/html; charset=utf-8")
        if path in FILES:
            name, content_type = FILES[path]
            return _reply(HTTPStatus.OK, (WEB / name).read_bytes(), f"{content_type}; charset=utf-8")
        params = dict(p.partition("=")[::2] for p in query.split("&") if p)
        if path == "/api/status":
            return _json(status_report(self.station))
        if path == "/api/transactions":
            try:
                last = int(params.get("last", "20"))
            except ValueError:
                return _error(HTTPStatus.BAD_REQUEST, "last must be an integer 1..200")
            if not 1 <= last <= 200:
                return _error(HTTPStatus.BAD_REQUEST, "last must be an integer 1..200")
            return _json(recent_reports(self.station, last))
        if path == "/api/schedule":
            return _json(page_schedule(self.station))
        if path == "/api/live":
            return _json({**self.live.as_json(), "now": datetime.now(UTC).isoformat()})
        if path == "/chart.svg":
            try:
                width = min(2000, max(240, int(params.get("w", "720"))))
                height = min(1200, max(160, int(params.get("h", "320"))))
            except ValueError:
                return _error(HTTPStatus.BAD_REQUEST, "w and h must be integers (pixels)")
            svg = render_chart(self.live, time.time(), width, height)
            return _reply(HTTPStatus.OK, svg.encode(), "image/svg+xml; charset=utf-8")
        return _error(HTTPStatus.NOT_FOUND, f"nothing at {path}")

    def _authorised(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            _, _, password = base64.b64decode(value.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(password, self._password)


# --------------------------------------------------------------------------- the page, rendered on the server


def _text(value: object) -> str:
    return "–" if value is None or value == "" else html.escape(str(value))


def _cell(value: object, cls: str = "") -> str:
    return f'<td class="{cls}">{_text(value)}</td>' if cls else f"<td>{_text(value)}</td>"


def transaction_row(tx: dict[str, Any]) -> str:
    """One row of the transactions table; app.js builds the same cells (showTransactions)."""
    running = tx["state"] != "ended"
    energy = None
    if tx["meter_stop_wh"] is not None and tx["meter_start_wh"] is not None:
        energy = f"{tx['meter_stop_wh'] - tx['meter_start_wh']} Wh"
    if not tx["records"]:
        signed = _cell("not signed yet", "") if running else _cell("MISSING", "bad")
    else:
        signed = _cell("verified", "ok") if tx["verified"] else _cell("DOES NOT VERIFY", "bad")
    delivered = _cell("delivered", "ok") if tx["delivered_at"] else _cell("queued")
    if running:
        delivered = _cell("running")
    ended = "running" if running or not tx["stopped_at"] else tx["stopped_at"].replace("T", " ")[:19]
    return (
        f'<tr data-ref="{html.escape(tx["ref"])}">{_cell(tx["ref"][:8])}{_cell(tx["csms_transaction_id"])}'
        f"{_cell(ended)}{_cell(energy)}{signed}{delivered}</tr>"
    )


def meter_row(m: dict[str, Any]) -> str:
    """One EVSE's meter (app.js builds the same cells)."""
    link = _cell(m["link"], "ok" if m["link"] == "up" else "bad")
    where = f"{m['bus']} / {m['device_id']}"
    return (
        f"<tr>{_cell(m['evse_id'])}{_cell(m['model'])}{_cell(where)}{link}"
        f"{_cell(m['serial'] or '?')}{_cell(m['last_error'] or 'none')}</tr>"
    )


def ev_row(e: dict[str, Any]) -> str:
    """One EVSE's car side: pilot, relay, lock, current limit, faults (app.js builds the same cells)."""
    faults = ", ".join(e["faults"]) or "none"
    pilot = _cell(e["pilot"], "") if e["online"] else _cell("controller silent", "bad")
    limit = f"{e['current_limit_a']:g} A"
    return (
        f"<tr>{_cell(e['evse_id'])}{pilot}{_cell(e['relay'])}{_cell(e['lock'])}{_cell(limit)}"
        f"{_cell(faults, 'bad' if e['faults'] else '')}</tr>"
    )


def render_page(station: Station, live: LiveSeries) -> str:
    """index.html with the status, the tables and the chart filled in: the first paint needs no script."""
    status = status_report(station)
    o, m = status["ocpp"], status["meter"]
    values: dict[str, tuple[object, str]] = {
        "station-id": (status["station_id"], ""),
        "csms-state": (
            f"connected (OCPP {o['version']})" if o["connected"] else "NOT connected",
            "ok" if o["connected"] else "bad",
        ),
        "csms-url": (o["url"], ""),
        "csms-queue": (o["queue_depth"], ""),
        "csms-error": (o["last_error"] or "none", ""),
        "meter-link": (m["link"], "ok" if m["link"] == "up" else "bad"),
        "meter-model": (m["model"], ""),
        "meter-identity": (f"{m['serial'] or '?'} / {m['firmware'] or '?'}", ""),
        "meter-key": (m["public_key"], "key"),
        "meter-error": (m["last_error"] or "none", ""),
        "updated": (f"as of {datetime.now().astimezone():%H:%M:%S}", "muted"),
        "live-caption": (live_caption(live), "muted" if not live.points else ""),
    }
    page = (WEB / "index.html").read_text(encoding="utf-8")
    for element_id, (value, cls) in values.items():
        page = page.replace(f'id="{element_id}"></', f'id="{element_id}" class="{cls}">{_text(value)}</', 1)
    connectors = "".join(
        f"<tr>{_cell(c['id'])}{_cell(c['state'], 'bad' if c['state'] == 'Faulted' else '')}"
        f"{_cell(_running(c['transaction']))}</tr>"
        for c in status["connectors"]
    )
    page = page.replace("<!--connectors-->", connectors)
    page = page.replace("<!--ev-->", "".join(ev_row(e) for e in status["ev"]))
    page = page.replace("<!--meters-->", "".join(meter_row(m) for m in status["meters"]))
    page = page.replace("<!--schedule-->", render_schedule(page_schedule(station)))
    page = page.replace("<!--transactions-->", "".join(transaction_row(tx) for tx in recent_reports(station, 20)))
    return page.replace("<!--chart-->", render_chart(live, time.time(), 720, 320))


def page_schedule(station: Station) -> dict[str, Any]:
    """Issue 19 part 5: the `schedule` report of the diagnostics socket with each EVSE's limit in words (`summary`,
    as `station diag schedule` says it) for the chart titles; app.js draws the charts from it."""
    report = schedule_report(station)
    for evse in report["evses"]:
        evse["summary"] = limit_text(evse)
    total = report["station"]
    if total is not None:
        cap = total["station_cap_a"]
        total["summary"] = (
            "no station maximum now" if cap is None else f"the station maximum caps the sum at {cap:g} A now"
        )
    return report


def render_schedule(report: dict[str, Any]) -> str:
    """The first paint of the schedule section: each EVSE's title and limit now (app.js adds the charts)."""
    return "".join(
        f'<div class="schedule" data-evse="{e["evse_id"]}"><h3>EVSE {e["evse_id"]}</h3>'
        f'<p class="{"" if e["controllable"] else "muted"}">{_text(e["summary"])}</p></div>'
        for e in report["evses"]
    )


def _running(tx: dict[str, Any] | None) -> str:
    return f"{tx['ref']} ({tx['id_tag']})" if tx else "none"


def live_caption(live: LiveSeries) -> str:
    if not live.ref:
        return "no transaction running"
    if not live.points:
        return f"transaction {live.ref[:8]}: waiting for the first reading"
    _, watts, wh = live.points[-1]
    return f"transaction {live.ref[:8]}: {watts / 1000:.1f} kW, {wh:.0f} Wh so far"


def _nice_step(span: float, ticks: int) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about `ticks` intervals over `span`."""
    raw = span / max(ticks, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    return next((m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw), 10 * magnitude)


def _fmt(value: float, step: float) -> str:
    """A tick label with as many decimals as the step needs (0.02 -> 0.04, 5 -> 10)."""
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    return f"{value:.{decimals}f}"


def render_chart(live: LiveSeries, now: float, width: int, height: int) -> str:
    """Two panels sharing a time axis: power (kW) above, energy delivered (kWh) below, each with its own y axis,
    units and ticks, the time window named; the points of the last CHART_WINDOW_S seconds only."""
    points = [p for p in live.points if p[0] >= now - CHART_WINDOW_S]
    left, right, top, bottom, gap = 56, 12, 24, 30, 32
    plot_w = width - left - right
    panel_h = (height - top - bottom - gap) / 2
    t_end = max(now, points[-1][0]) if points else now
    t_start = min(points[0][0], t_end - 60) if points else t_end - 60
    t_start = max(t_start, t_end - CHART_WINDOW_S)
    span = t_end - t_start

    def x(t: float) -> float:
        return left + (t - t_start) / span * plot_w

    out = [
        f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="power and energy of the running transaction">'
    ]
    minutes = span / 60
    window = f"last {minutes:.0f} min" if minutes >= 1.5 else f"last {span:.0f} s"
    out.append(f'<text class="window" x="{width - right}" y="14" text-anchor="end">{window}</text>')
    panels = [
        ("power", "kW", [(t, w / 1000) for t, w, _ in points], top),
        ("energy", "kWh", [(t, e / 1000) for t, _, e in points], top + panel_h + gap),
    ]
    for name, unit, series, y0 in panels:
        peak = max((v for _, v in series), default=0.0)
        step = _nice_step(peak if peak > 0 else 1.0, 4)
        y_max = step * max(1, math.ceil(peak / step)) if peak > 0 else step * 4

        def y(v: float, y0: float = y0, y_max: float = y_max) -> float:
            return y0 + panel_h - v / y_max * panel_h

        out.append(f'<text class="unit {name}" x="{left}" y="{y0 - 8:.1f}">{name} ({unit})</text>')
        tick = 0.0
        while tick <= y_max + step / 1000:
            out.append(
                f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>'
                f'<text class="tick" x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{_fmt(tick, step)}</text>'
            )
            tick += step
        out.append(
            f'<line class="axis" x1="{left}" x2="{left}" y1="{y0:.1f}" y2="{y0 + panel_h:.1f}"/>'
            f'<line class="axis" x1="{left}" x2="{left + plot_w}" y1="{y0 + panel_h:.1f}" y2="{y0 + panel_h:.1f}"/>'
        )
        if len(series) == 1:
            t, v = series[0]
            out.append(f'<circle class="{name}" cx="{x(t):.1f}" cy="{y(v):.1f}" r="3"/>')
        elif series:
            coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in series)
            out.append(f'<polyline id="{name}-line" class="{name}" points="{coords}"/>')
    t_step = next((s for s in TIME_STEPS_S if s >= span / 5), TIME_STEPS_S[-1])
    tick = math.ceil(t_start / t_step) * t_step
    while tick <= t_end:
        label = datetime.fromtimestamp(tick).astimezone().strftime("%H:%M:%S" if t_step < 60 else "%H:%M")
        out.append(
            f'<line class="grid" x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{top}" y2="{height - bottom}"/>'
            f'<text class="tick time" x="{x(tick):.1f}" y="{height - bottom + 16}" text-anchor="middle">{label}</text>'
        )
        tick += t_step
    out.append("</svg>")
    return "".join(out)
