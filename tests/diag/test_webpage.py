"""The technician's web page against a running station (simulated meter on a real pty pair, real CSMS on loopback):
HTTP behaviour (password, rate limit, read-only, no external resources) with a real HTTP client, and the page itself
rendered by a real headless Chromium (Debian's `chromium`; `.ci/run` installs it)."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from station.app import Station, running_station
from station.config import ConfigError, parse_config
from station.demo.csms import LocalCsms
from station.diag.webpage import FREE_FAILURES, WEB, RateLimit

STATION = "CP-WEB"
PASSWORD = "technician-pass-42"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def config_for(tmp_path: Path, url: str, **diagnostics: Any) -> dict[str, Any]:
    return {
        "station": {"id": STATION},
        "csms": {"url": url, "reconnect_min": 0.2, "reconnect_max": 1},
        "meter": {"transport": "simulated", "simulator": {"signing_time": 0.2, "state": str(tmp_path / "m.json")}},
        "storage": {"path": str(tmp_path / "s.db")},
        "diagnostics": {"http": "127.0.0.1:0", "http_password": PASSWORD, **diagnostics},
    }


def base_url(station: Station) -> str:
    assert station.page is not None
    return f"http://127.0.0.1:{station.page.port}"


def get(url: str, password: str | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    if password is not None:
        token = base64.b64encode(f"technician:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


async def fetch(url: str, password: str | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(get, url, password, method)


async def test_password_rate_limit_and_read_only_api(tmp_path: Path, csms: LocalCsms) -> None:
    async with running_station(parse_config(config_for(tmp_path, csms.url))) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        url = base_url(station)

        code, headers, _ = await fetch(url + "/")
        assert code == 401 and headers["WWW-Authenticate"].startswith("Basic")
        code, headers, body = await fetch(url + "/", PASSWORD)
        assert code == 200 and b"<title>station diagnostics</title>" in body
        assert "default-src 'self'" in headers["Content-Security-Policy"]

        code, _, body = await fetch(url + "/api/status", PASSWORD)
        status = json.loads(body)
        assert code == 200 and status["ocpp"]["connected"] is True and status["meter"]["link"] == "up"
        assert status["connectors"][0]["state"] == "Available"
        assert (await fetch(url + "/api/transactions?last=x", PASSWORD))[0] == 400
        assert (await fetch(url + "/api/nothing", PASSWORD))[0] == 404
        # Nothing on the page changes anything.
        assert (await fetch(url + "/api/status", PASSWORD, method="POST"))[0] == 405
        assert (await fetch(url + "/api/status", PASSWORD, method="DELETE"))[0] == 405

        # Guessing: after a few wrong passwords this address is refused, even with the right one, for a while. (A
        # clock that stands still: the wait cannot run out between two requests on a slow machine.)
        station.page.limits = RateLimit(clock=lambda: 1000.0)  # type: ignore[union-attr]
        for _ in range(FREE_FAILURES):
            assert (await fetch(url + "/api/status", "wrong-password"))[0] == 401
        code, headers, _ = await fetch(url + "/api/status", PASSWORD)
        assert code == 429 and int(headers["Retry-After"]) > 0
        assert station.runtime.core.evses[1].transaction is None


async def test_garbage_requests_get_400_and_the_page_keeps_serving(tmp_path: Path, csms: LocalCsms) -> None:
    async with running_station(parse_config(config_for(tmp_path, csms.url))) as station:
        assert station.page is not None
        for garbage in (
            b"hello\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", station.page.port)
            writer.write(garbage)
            await writer.drain()
            answer = await reader.read()
            writer.close()
            assert re.match(rb"HTTP/[01]\.[019] 400 ", answer), (
                answer
            )  # HTTP/1.0 when not even the version parsed, 0.9 for one
        reader, writer = await asyncio.open_connection("127.0.0.1", station.page.port)
        writer.write(b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n")
        await writer.drain()
        answer = await reader.read()
        assert re.match(rb"HTTP/1\.[01] 400 ", answer), answer[:100]  # over-long head: refused with a reason
        writer.close()
        assert (await fetch(base_url(station) + "/api/status", PASSWORD))[0] == 200


def get_from(source: str, url: str, password: str | None) -> tuple[int, dict[str, str]]:
    """A GET from another loopback address (127.0.0.0/8 is all this machine), as a client elsewhere would be."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10, source_address=(source, 0))
    headers = {}
    if password is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"technician:{password}".encode()).decode()
    try:
        connection.request("GET", parts.path or "/", headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, dict(response.headers)
    finally:
        connection.close()


async def test_guessers_elsewhere_never_lock_out_the_technician(tmp_path: Path, csms: LocalCsms) -> None:
    """Issue 14.5: 5 wrong passwords from each of four addresses, and 20+ bad requests a minute after that, do not
    refuse the right password from a fifth address; each guessing address waits exponentially longer, alone."""
    async with running_station(parse_config(config_for(tmp_path, csms.url))) as station:
        url = base_url(station) + "/api/status"
        now = [1000.0]  # the back-off's clock, moved by the test: behaviour, not wall-clock time
        assert station.page is not None
        station.page.limits = RateLimit(clock=lambda: now[0])

        async def status(source: str, password: str | None) -> tuple[int, dict[str, str]]:
            return await asyncio.to_thread(get_from, source, url, password)

        guessers = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
        for source in guessers:
            for _ in range(FREE_FAILURES):
                assert (await status(source, "wrong-password"))[0] == 401
        assert (await status("127.0.0.6", PASSWORD))[0] == 200
        for _ in range(6):  # 24 more bad requests within the minute
            for source in guessers:
                code, headers = await status(source, "wrong-password")
                assert code == 429 and int(headers["Retry-After"]) >= 1
        assert (await status("127.0.0.6", PASSWORD))[0] == 200
        # A guessing address waits out its own back-off even with the right password: were its attempts looked at
        # while it waits, it could guess at full speed. Nobody else's failures count against it.
        assert (await status("127.0.0.3", PASSWORD))[0] == 429
        assert (await status("127.0.0.6", None))[0] == 401  # no password: asked for one, not counted

        # Exponential per address: after the free ones 1 s, then 2 s, ... (and a guessing address's own attempts are
        # not even looked at while it waits, so it cannot guess faster by sending more).
        assert station.page.limits.blocked_for("127.0.0.2") == 1.0
        now[0] += 1.0
        assert (await status("127.0.0.2", "wrong-password"))[0] == 401
        code, headers = await status("127.0.0.2", "wrong-password")
        assert code == 429 and int(headers["Retry-After"]) == 2
        now[0] += 2.0
        assert (await status("127.0.0.2", "wrong-password"))[0] == 401
        code, headers = await status("127.0.0.2", "wrong-password")
        assert code == 429 and int(headers["Retry-After"]) == 4
        assert (await status("127.0.0.6", PASSWORD))[0] == 200


async def test_the_first_paint_is_rendered_on_the_server(tmp_path: Path, csms: LocalCsms) -> None:
    """Issue 16 item 11: without any script the page shows the status, the connectors, the transactions (a running
    one "running", "not signed yet") and a chart with axes and units."""
    async with running_station(parse_config(config_for(tmp_path, csms.url))) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        url = base_url(station) + "/"
        code, headers, body = await fetch(url, PASSWORD)
        page = body.decode()
        assert code == 200 and headers["Content-Type"].startswith("text/html")
        assert element(page, "station-id") == STATION
        assert element(page, "csms-state") == "connected (OCPP 1.6)"
        assert element(page, "meter-link") == "up"
        assert element(page, "meter-key").startswith("3059")
        assert element(page, "live-caption") == "no transaction running"
        assert "<td>Available</td>" in page and "power (kW)" in page and "energy (kWh)" in page

        assert await csms.remote_start(STATION, "TAG-SSR") == "Accepted"
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Charging")
        await csms.wait_until(lambda: csms.assigned_transaction_ids)
        page = (await fetch(url, PASSWORD))[2].decode()
        [row] = re.findall(r"<tr data-ref=.*?</tr>", page, re.S)
        assert ">running<" in row and ">not signed yet<" in row and "None" not in row
        assert "TAG-SSR" in page and "<td>Charging</td>" in page
        # HEAD: the same headers, no body.
        code, headers, body = await fetch(url, PASSWORD, method="HEAD")
        assert code == 200 and body == b"" and "default-src 'self'" in headers["Content-Security-Policy"]


def test_the_chart_has_axes_units_time_labels_and_fills_its_box() -> None:
    import xml.etree.ElementTree as ET

    from station.diag.webpage import LiveSeries, render_chart

    live = LiveSeries(ref="ab" * 16)
    now = 1_800_000_000.0
    for i in range(120):  # two minutes at 1 s, 11 kW
        live.points.append((now - 120 + i, 11000.0, 11000 * i / 3600))
    svg = render_chart(live, now, 800, 340)
    root = ET.fromstring(svg)
    assert root.get("viewBox") == "0 0 800 340" and root.get("width") == "800" and root.get("height") == "340"
    texts = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "power (kW)" in texts and "energy (kWh)" in texts and "last 2 min" in texts
    times = [t for t in texts if re.fullmatch(r"\d\d:\d\d(:\d\d)?", t)]
    assert len(times) >= 3, texts
    assert "15" in texts or "12" in texts  # a round power tick above 11 kW
    for line in root.iter("{http://www.w3.org/2000/svg}polyline"):
        xs = [float(p.split(",")[0]) for p in (line.get("points") or "").split()]
        ys = [float(p.split(",")[1]) for p in (line.get("points") or "").split()]
        assert min(xs) > 0 and max(xs) <= 800 and min(ys) > 0 and max(ys) <= 340
        assert max(xs) - min(xs) > 600  # the series spans the box, not a corner of it
    # One reading: a dot, not a line from nowhere.
    one = LiveSeries(ref="cd" * 16)
    one.points.append((now, 11000.0, 0.0))
    root = ET.fromstring(render_chart(one, now, 800, 340))
    assert not list(root.iter("{http://www.w3.org/2000/svg}polyline"))
    assert len(list(root.iter("{http://www.w3.org/2000/svg}circle"))) == 2


async def test_connections_are_capped_and_a_slow_client_cannot_hold_one(
    tmp_path: Path, csms: LocalCsms, monkeypatch: pytest.MonkeyPatch
) -> None:
    from station.diag import webpage

    monkeypatch.setattr(webpage, "CONNECTION_LIFETIME_S", 1.0)
    async with running_station(parse_config(config_for(tmp_path, csms.url))) as station:
        assert station.page is not None
        held = [await asyncio.open_connection("127.0.0.1", station.page.port) for _ in range(webpage.MAX_CONNECTIONS)]
        for _, writer in held:
            writer.write(b"GET / HTTP/1.1\r\n")  # a head that never ends
        reader, writer = await asyncio.open_connection("127.0.0.1", station.page.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # one more: closed at once
        writer.close()
        # Nobody closes them: the server does, at the end of their lifetime.
        for r, _ in held:
            assert await asyncio.wait_for(r.read(), 10) == b""
        for _, w in held:
            w.close()
        assert (await fetch(base_url(station) + "/api/status", PASSWORD))[0] == 200


def test_page_loads_nothing_from_elsewhere() -> None:
    for name in ("index.html", "app.js", "style.css"):
        # The SVG namespace name (app.js's createElementNS, issue 19 part 5) is a name, never fetched.
        text = (WEB / name).read_text().replace('"http://www.w3.org/2000/svg"', '"svg-namespace"')
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
        assert "@import" not in text
    assert sum((WEB / n).stat().st_size for n in ("index.html", "app.js", "style.css")) < 20_000  # light


def test_config_needs_a_password_for_the_page(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="http_password"):
        parse_config(config_for(tmp_path, "ws://127.0.0.1:9/ocpp", http_password=""))
    with pytest.raises(ConfigError, match="host:port"):
        parse_config(config_for(tmp_path, "ws://127.0.0.1:9/ocpp", http="8080"))


# ---------------------------------------------------------------------- in a real browser


async def render(url: str) -> str:
    """The page's DOM after its scripts ran, from headless Chromium, logged in with the technician password."""
    if CHROMIUM is None:
        if os.environ.get("STATION_CI"):
            pytest.fail("chromium is not installed but STATION_CI is set (.ci/run installs chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    with tempfile.TemporaryDirectory(prefix="station-chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            url.replace("http://", f"http://technician:{PASSWORD}@"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


def element(dom: str, element_id: str) -> str:
    match = re.search(rf'<[a-z]+ id="{element_id}"[^>]*>(.*?)</', dom, re.S)
    assert match, f"no #{element_id} in the page"
    return match.group(1)


@pytest.mark.slow  # headless Chromium
async def test_the_page_in_a_real_browser_shows_status_live_chart_and_verified_transactions(
    tmp_path: Path, csms: LocalCsms
) -> None:
    async with running_station(parse_config(config_for(tmp_path, csms.url))) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        station.runtime.meters[1].monitor_interval = 0.2  # live readings often enough for a chart in a short test
        assert station.page is not None
        station.page.sample_interval = 0.1
        url = base_url(station) + "/"

        assert await csms.remote_start(STATION, "TAG-WEB") == "Accepted"
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Charging")
        await csms.wait_until(lambda: len(station.page.live.points) >= 3 if station.page else False)
        # No step from the idle reading taken before the start: every point is a reading while charging.
        assert min(w for _, w, _ in station.page.live.points) > 0
        dom = await render(url)
        assert element(dom, "station-id") == STATION
        assert element(dom, "csms-state") == "connected (OCPP 1.6)"
        assert element(dom, "meter-link") == "up"
        assert element(dom, "meter-key").startswith("3059")
        assert "Charging" in dom and "TAG-WEB" in dom
        points = re.search(r'id="power-line"[^>]*points="([^"]*)"', dom)
        assert points and len(points.group(1).split()) >= 3, "the live chart has no data"
        assert element(dom, "live-caption").startswith("transaction ")
        assert element(dom, "updated").startswith("updated ")  # app.js's refresh, chart included, went through
        assert "power (kW)" in dom and "energy (kWh)" in dom and re.search(r">\d\d:\d\d(:\d\d)?<", dom)
        assert re.search(r'<svg[^>]* id="chart"[^>]*width="\d+"', dom)  # redrawn by app.js at the box's width
        [row] = re.findall(r"<tr data-ref=.*?</tr>", dom, re.S)
        assert ">running<" in row  # the running transaction's "delivered"

        await csms.wait_until(lambda: csms.assigned_transaction_ids)
        await csms.remote_stop(STATION, csms.assigned_transaction_ids[-1])
        await csms.wait_for("StopTransaction")
        await station.runtime.idle()
        await csms.wait_until(lambda: station.store.outbox_depth() == 0)
        dom = await render(url)
        rows = re.findall(r"<tr data-ref=.*?</tr>", dom, re.S)
        assert len(rows) == 1
        assert (
            ">verified<" in rows[0] and ">delivered<" in rows[0] and str(csms.assigned_transaction_ids[-1]) in rows[0]
        )
        assert element(dom, "live-caption") == "no transaction running"


# ---------------------------------------------------------------------- the charging schedule (issue 19 part 5)


def smart_config(tmp_path: Path, url: str) -> dict[str, Any]:
    """The page on a station whose EVSE's current can be controlled (a simulated charge controller)."""
    return config_for(tmp_path, url) | {
        "charge_controller": {"driver": "simulated", "control_socket": str(tmp_path / "car.sock")}
    }


async def test_the_schedule_is_served_behind_the_password_and_in_the_first_paint(
    tmp_path: Path, csms: LocalCsms
) -> None:
    """Issue 19 part 5: /api/schedule is the socket's `schedule` report with each EVSE's limit in words, behind the
    same password as the rest; the page's first paint names each EVSE's limit now."""
    from tests.diag.test_diag_socket import profiles_for_the_schedule

    async with running_station(parse_config(smart_config(tmp_path, csms.url))) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        for profile in profiles_for_the_schedule():
            assert station.runtime.smart.install(profile, ocpp16=True) is None
        url = base_url(station)
        assert (await fetch(url + "/api/schedule"))[0] == 401
        assert (await fetch(url + "/api/schedule", "wrong-password"))[0] == 401
        code, headers, body = await fetch(url + "/api/schedule", PASSWORD)
        report = json.loads(body)
        assert code == 200 and headers["Content-Type"].startswith("application/json")
        [evse] = report["evses"]
        assert evse["summary"] == "limit now: 10 A (profile 2 TxDefaultProfile, stack level 0)"
        assert [p["limit"] for p in evse["schedule"]["periods"]] == [10.0, 16.0]
        assert report["station"]["summary"] == "the station maximum caps the sum at 25 A now"
        page = (await fetch(url + "/", PASSWORD))[2].decode()
        assert '<div class="schedule" data-evse="1"><h3>EVSE 1</h3>' in page
        assert "limit now: 10 A (profile 2 TxDefaultProfile, stack level 0)" in page


@pytest.mark.slow  # headless Chromium
async def test_the_page_in_a_real_browser_draws_the_charging_schedule(tmp_path: Path, csms: LocalCsms) -> None:
    """Issue 19 part 5: app.js draws each EVSE's next 24 h as a step chart (inline SVG): amperes on the y axis with
    labels, hours on the x axis, the moment now marked, a title per EVSE; and the station's, capped by its
    maximum."""
    from tests.diag.test_diag_socket import profiles_for_the_schedule

    async with running_station(parse_config(smart_config(tmp_path, csms.url))) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        for profile in profiles_for_the_schedule():
            assert station.runtime.smart.install(profile, ocpp16=True) is None
        dom = await render(base_url(station) + "/")
        assert element(dom, "updated").startswith("updated ")  # app.js's refresh went through
        match = re.search(r'<svg id="schedule-1" class="schedule-chart".*?</svg>', dom, re.S)
        assert match, "no schedule chart for EVSE 1"
        chart = match.group(0)
        assert re.search(r'<div class="schedule" data-evse="1"><h3>EVSE 1</h3><p>limit now: 10 A \(profile 2 ', dom)
        assert ">limit (A per phase)<" in chart
        amps = re.findall(r'<text class="tick amps"[^>]*>(\d+)</text>', chart)
        assert amps[0] == "0" and int(amps[-1]) >= 32 and len(amps) >= 3, amps  # up to the controller's 32 A
        hours = re.findall(r'<text class="tick time"[^>]*>(\d\d:\d\d)</text>', chart)
        assert len(hours) >= 7 and all(h.endswith(":00") for h in hours), hours  # every 3 h over the day
        assert re.search(r'<line class="now"', chart) and '<text class="now"' in chart and ">now<" in chart
        [step] = re.findall(r'<path class="step" d="([^"]+)"', chart)
        assert step.startswith("M") and step.count("V") == 1  # 10 A, then one step up to 16 A
        assert '<svg id="schedule-0" class="schedule-chart"' in dom and "station (all EVSEs)" in dom
