"""Sends one file to the place a CSMS names: HTTP(S) PUT (POST where the server takes no PUT) and FTP (passive,
else active). Credentials come from the URL (`scheme://user:password@host/...`) and never reach a log line or an
error text: what this module raises names the host and the path, not the user or the password.

Every transfer is bounded: a file size limit, one timeout for the whole attempt, no redirects followed (a redirect
could carry the credentials elsewhere). HTTPS trusts the certificate store's CSMS roots (N01.FR.15) and the
operating system's CAs (N01.FR.16). FTP runs stdlib ftplib in a thread: there is no well-kept asyncio FTP client
among the dependencies, ftplib is small and complete (passive and active, TLS later if needed), and the thread is
bounded by ftplib's socket timeout and closed from outside when the upload is cancelled. The outcome is an OCPP
UploadLogStatus for a failure (UploadFailure, PermissionDenied, BadMessage, NotSupportedOperation), chosen as
precisely as the server lets it be told (1.6 security whitepaper N01.FR.10).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ftplib
import io
import posixpath
import ssl
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

PROTOCOLS = ("FTP", "HTTP", "HTTPS")  # OCPPCommCtrlr.FileTransferProtocols / 1.6 SupportedFileTransferProtocols
SCHEMES = {"ftp": "FTP", "http": "HTTP", "https": "HTTPS"}
MAX_UPLOAD_BYTES = 16 * 1024 * 1024
UPLOAD_TIMEOUT = 120.0  # seconds for one attempt, connect to last byte

UPLOAD_FAILURE = "UploadFailure"
PERMISSION_DENIED = "PermissionDenied"
BAD_MESSAGE = "BadMessage"
NOT_SUPPORTED = "NotSupportedOperation"


class UploadError(Exception):
    """An attempt failed; `status` is the UploadLogStatus that says why, `reason` a line for the log (no secret)."""

    def __init__(self, status: str, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}")


@dataclass(frozen=True)
class Target:
    """A parsed upload location: scheme, where (no credentials), the credentials apart."""

    scheme: str
    host: str
    port: int | None
    path: str
    user: str
    password: str

    @property
    def shown(self) -> str:
        """The location for a log line: without the user and the password."""
        netloc = self.host if self.port is None else f"{self.host}:{self.port}"
        return urlunsplit((self.scheme, netloc, self.path, "", ""))


def parse_location(location: str) -> Target:
    """The location a CSMS sent; ValueError (with no secret in it) for one the station cannot upload to."""
    try:
        parts = urlsplit(location.strip())
        port = parts.port
    except ValueError:
        raise ValueError("not a URL") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"scheme {scheme[:10]!r} not supported; FileTransferProtocols: {','.join(PROTOCOLS)}")
    if not parts.hostname:
        raise ValueError("no host in the URL")
    return Target(
        scheme,
        parts.hostname,
        port,
        parts.path or "/",
        unquote(parts.username or ""),
        unquote(parts.password or ""),
    )


def protocol_of(location: str) -> str | None:
    try:
        return SCHEMES[parse_location(location).scheme]
    except ValueError:
        return None


async def upload(
    location: str,
    name: str,
    data: bytes,
    *,
    timeout: float = UPLOAD_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
) -> str:
    """Send `data` as file `name` to the directory `location`; how it went (e.g. "HTTP PUT 201") when it did,
    UploadError when not."""
    target = parse_location(location)
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(UPLOAD_FAILURE, f"file of {len(data)} bytes exceeds the upload limit {MAX_UPLOAD_BYTES}")
    if target.scheme == "ftp":
        return await _ftp(target, name, data, timeout)
    return await _http(target, name, data, timeout, ssl_context)


# ---------------------------------------------------------------------- HTTP(S)


def http_status(code: int) -> str:
    if code in (401, 403, 407):
        return PERMISSION_DENIED
    if code in (405, 501):
        return NOT_SUPPORTED
    if code in (400, 411, 413, 414, 415, 422):
        return BAD_MESSAGE
    return UPLOAD_FAILURE


async def _http(target: Target, name: str, data: bytes, timeout: float, ssl_context: ssl.SSLContext | None) -> str:
    """PUT to `<location>/<name>` (the location is a directory: 1.6 §6.? GetDiagnostics "directory URI"); a server
    that answers 405 or 501 (no PUT there) gets a POST of a multipart form to the location itself, with the file
    name in Content-Disposition (N01.FR.18, N01.FR.19)."""
    netloc = target.host if target.port is None else f"{target.host}:{target.port}"
    directory = target.path if target.path.endswith("/") else target.path + "/"
    put_url = urlunsplit((target.scheme, netloc, directory + quote(name), "", ""))
    post_url = urlunsplit((target.scheme, netloc, target.path, "", ""))
    import aiohttp  # only when a log upload comes: the daemon starts without the HTTP client

    headers = {}
    if target.user:
        token = base64.b64encode(f"{target.user}:{target.password}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    limits = aiohttp.ClientTimeout(total=timeout)
    use_ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
    try:
        async with aiohttp.ClientSession(timeout=limits, headers=headers) as session:
            async with session.put(
                put_url,
                data=data,
                headers={"Content-Type": "application/gzip"},
                allow_redirects=False,
                ssl=use_ssl if target.scheme == "https" else False,
            ) as answer:
                await answer.read()
                if 200 <= answer.status < 300:
                    return f"HTTP PUT {answer.status}"
                if answer.status not in (405, 501):
                    raise UploadError(http_status(answer.status), f"PUT {target.shown}: HTTP {answer.status}")
            form = aiohttp.FormData()
            form.add_field("uploadfile", io.BytesIO(data), filename=name, content_type="application/octet-stream")
            async with session.post(
                post_url, data=form, allow_redirects=False, ssl=use_ssl if target.scheme == "https" else False
            ) as answer:
                await answer.read()
                if 200 <= answer.status < 300:
                    return f"HTTP POST {answer.status}"
                raise UploadError(http_status(answer.status), f"POST {target.shown}: HTTP {answer.status}")
    except UploadError:
        raise
    except TimeoutError:
        raise UploadError(UPLOAD_FAILURE, f"{target.shown}: no answer within {timeout:g} s") from None
    except (ssl.SSLError, aiohttp.ClientSSLError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise UploadError(UPLOAD_FAILURE, f"{target.shown}: TLS: {reason}") from None
    except aiohttp.ClientError as exc:
        raise UploadError(UPLOAD_FAILURE, f"{target.shown}: {type(exc).__name__}") from None
    except OSError as exc:
        raise UploadError(UPLOAD_FAILURE, f"{target.shown}: {exc.strerror or type(exc).__name__}") from None


# ---------------------------------------------------------------------- FTP


def ftp_status(exc: ftplib.Error) -> str:
    text = str(exc)
    code = text[:3]
    if code in ("530", "532", "550", "553"):
        return PERMISSION_DENIED  # not logged in / no permission / file name not allowed
    if code in ("500", "501", "502", "504"):
        return BAD_MESSAGE if code in ("500", "501") else NOT_SUPPORTED
    return UPLOAD_FAILURE


class _FtpUpload:
    """One FTP upload in a worker thread; `abort` (from the event loop) closes its sockets so the thread ends now."""

    def __init__(self, target: Target, name: str, data: bytes, timeout: float) -> None:
        self.target = target
        self.name = name
        self.data = data
        self.timeout = timeout
        self.ftp = ftplib.FTP(timeout=timeout)

    def run(self) -> str:
        """Passive first (what works through NAT, and what 2.0.1 N01 asks an FTP client to do), active (PORT) when
        the server refuses passive mode or its passive data connection cannot be opened."""
        ftp = self.ftp
        ftp.connect(self.target.host, self.target.port or 21)
        ftp.login(self.target.user or "anonymous", self.target.password or "anonymous@")
        directory = self.target.path.strip("/")
        if directory:
            ftp.cwd(posixpath.join("/", unquote(directory)))
        ftp.voidcmd("TYPE I")
        try:
            ftp.set_pasv(True)
            ftp.storbinary(f"STOR {self.name}", io.BytesIO(self.data))
            return "FTP passive"
        except (ftplib.error_perm, ftplib.error_reply, OSError) as exc:
            if isinstance(exc, ftplib.error_perm) and not str(exc).startswith(("500", "501", "502", "504")):
                raise  # refused for another reason than passive mode (no permission): active mode will not help
        ftp.set_pasv(False)
        ftp.storbinary(f"STOR {self.name}", io.BytesIO(self.data))
        return "FTP active"

    def finish(self) -> None:
        with contextlib.suppress(Exception):
            self.ftp.quit()
        self.abort()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.ftp.close()


async def _ftp(target: Target, name: str, data: bytes, timeout: float) -> str:
    if any(c in name for c in "\r\n/"):
        raise UploadError(BAD_MESSAGE, "file name not usable over FTP")
    job = _FtpUpload(target, name, data, timeout)
    try:
        async with asyncio.timeout(timeout):
            how = await asyncio.to_thread(job.run)
    except TimeoutError:
        job.abort()
        raise UploadError(UPLOAD_FAILURE, f"{target.shown}: not done within {timeout:g} s") from None
    except asyncio.CancelledError:
        job.abort()
        raise
    except ftplib.Error as exc:
        job.abort()
        raise UploadError(ftp_status(exc), f"{target.shown}: FTP {str(exc)[:80]}") from None
    except (OSError, EOFError) as exc:
        job.abort()
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise UploadError(UPLOAD_FAILURE, f"{target.shown}: {reason}") from None
    await asyncio.to_thread(job.finish)
    return how
