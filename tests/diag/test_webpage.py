"""The technician's web page against a running station (simulated meter on a real pty pair, real CSMS on loopback):
HTTP behaviour (password, rate limit, read-only, no external resources) with a real HTTP client, and the page itself
rendered by a real headless Chromium (Debian's `chromium`; `.ci/run` installs it)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from station.app import Station, running_station
from station.config import ConfigError, parse_config
from station.demo.csms import LocalCsms
from station.diag.webpage import FAILURES_PER_ADDRESS, WEB

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

        # Guessing: after a few wrong passwords this address is refused, even with the right one, for a while.
        for _ in range(FAILURES_PER_ADDRESS):
            assert (await fetch(url + "/api/status", "wrong-password"))[0] == 401
        code, headers, _ = await fetch(url + "/api/status", PASSWORD)
        assert code == 429 and int(headers["Retry-After"]) > 0
        assert station.runtime.core.connectors[1].transaction is None


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
            assert answer.startswith(b"HTTP/1.1 400"), answer
        reader, writer = await asyncio.open_connection("127.0.0.1", station.page.port)
        writer.write(b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n")
        await writer.drain()
        assert await reader.read() == b""  # over-long head: dropped
        writer.close()
        assert (await fetch(base_url(station) + "/api/status", PASSWORD))[0] == 200


def test_page_loads_nothing_from_elsewhere() -> None:
    for name in ("index.html", "app.js", "style.css"):
        text = (WEB / name).read_text()
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
        station.runtime.monitor_interval = 0.2  # live readings often enough for a chart in a short test
        assert station.page is not None
        station.page.sample_interval = 0.1
        url = base_url(station) + "/"

        assert await csms.remote_start(STATION, "TAG-WEB") == "Accepted"
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Charging")
        await csms.wait_until(lambda: len(station.page.live.points) >= 3 if station.page else False)
        dom = await render(url)
        assert element(dom, "station-id") == STATION
        assert element(dom, "csms-state") == "connected (OCPP 1.6)"
        assert element(dom, "meter-link") == "up"
        assert element(dom, "meter-key").startswith("3059")
        assert "Charging" in dom and "TAG-WEB" in dom
        points = re.search(r'id="power-line"[^>]*points="([^"]*)"', dom)
        assert points and len(points.group(1).split()) >= 3, "the live chart has no data"
        assert element(dom, "live-caption").startswith("transaction ")

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
