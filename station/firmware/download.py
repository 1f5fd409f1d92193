"""Fetching a release over HTTP or HTTPS (2.0.1 L01 / 1.6 §5.19 `location`, `retries`, `retryInterval`): with aiohttp
(already the technician page's server), into a `.part` file renamed once complete, never more than `max_bytes`, each
attempt bounded by `timeout`. `retries` counts the attempts after the first (L01.FR.30: DownloadFailed only after
all of them). The URL may carry credentials; it is never logged, only its scheme and host.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import structlog

log = structlog.get_logger("station.firmware")

MAX_URL = 512  # FirmwareType.location maxLength (2.0.1); 1.6 anyURI has none, we keep the same bound
MAX_RETRIES = 10  # a CSMS's `retries` beyond this is clamped: the station decides how long it keeps trying
MAX_RETRY_INTERVAL = 3600.0


class DownloadFailed(Exception):
    pass


def where(url: str) -> str:
    """What of a URL may go into a log line: scheme, host and port (no user, password, path or query)."""
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.hostname or '?'}{f':{parsed.port}' if parsed.port else ''}"


def check_location(url: str) -> str | None:
    """Why this `location` cannot be downloaded, or None."""
    if len(url) > MAX_URL:
        return f"location longer than {MAX_URL} characters"
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return "location is not an http:// or https:// URL"
    return None


async def fetch_once(
    url: str, dest: Path, *, max_bytes: int, timeout: float, ssl_context: ssl.SSLContext | None
) -> int:
    """One attempt: the file at `dest` when it returns (its size), DownloadFailed otherwise (nothing left at dest)."""
    import aiohttp  # only when a firmware update comes: the daemon starts without the HTTP client

    part = dest.with_name(dest.name + ".part")
    size = 0
    try:
        async with (
            asyncio.timeout(timeout),
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url, ssl=ssl_context if ssl_context is not None else True, allow_redirects=True) as response,
        ):
            if response.status != 200:
                raise DownloadFailed(f"HTTP {response.status}")
            if response.content_length is not None and response.content_length > max_bytes:
                raise DownloadFailed(f"file of {response.content_length} bytes is larger than {max_bytes}")
            with open(part, "wb") as out:  # noqa: ASYNC230 -- chunks of 64 KiB; a thread hop each costs more
                async for chunk in response.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > max_bytes:
                        raise DownloadFailed(f"file larger than {max_bytes} bytes")
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        part.replace(dest)
        return size
    except (aiohttp.ClientError, TimeoutError, OSError, ssl.SSLError) as exc:
        raise DownloadFailed(f"{type(exc).__name__}: {str(exc)[:160]}") from None
    finally:
        part.unlink(missing_ok=True)


async def download(
    url: str,
    dest: Path,
    *,
    retries: int,
    retry_interval: float,
    max_bytes: int,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    on_attempt: Callable[[int], None] | None = None,
) -> int:
    """Up to 1 + `retries` attempts, `retry_interval` seconds apart; the size of the file at `dest`."""
    retries = max(0, min(retries, MAX_RETRIES))
    retry_interval = max(0.0, min(retry_interval, MAX_RETRY_INTERVAL))
    last = ""
    for attempt in range(1 + retries):
        if attempt:
            await asyncio.sleep(retry_interval)
        if on_attempt is not None:
            on_attempt(attempt)
        try:
            size = await fetch_once(url, dest, max_bytes=max_bytes, timeout=timeout, ssl_context=ssl_context)
        except DownloadFailed as exc:
            last = str(exc)
            log.warning("firmware download attempt failed", source=where(url), attempt=attempt + 1, error=last)
            continue
        log.info("firmware downloaded", source=where(url), attempt=attempt + 1, size=size)
        return size
    raise DownloadFailed(f"{1 + retries} attempt(s) failed, last: {last}")
