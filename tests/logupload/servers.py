"""Real file servers on loopback for the log upload tests: an HTTP(S) server (aiohttp) that takes PUT and POST and
can be told to refuse, and an FTP server (pyftpdlib, in a thread) that can be told to refuse passive mode."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer


@dataclass
class Upload:
    method: str
    path: str
    name: str
    data: bytes
    user: str = ""


@dataclass
class UploadServer:
    """HTTP(S) on 127.0.0.1. `refuse`: answer this status to every upload (None: take it); `refuse_times`: only to
    the next N; `put`: False answers PUT with 405 (a server that takes POST only); `credentials`: (user, password)
    it requires; `delay`: seconds before answering."""

    tls: ssl.SSLContext | None = None
    refuse: int | None = None
    refuse_times: int | None = None
    put: bool = True
    credentials: tuple[str, str] | None = None
    delay: float = 0.0
    uploads: list[Upload] = field(default_factory=list)
    attempts: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/logs/"

    async def start(self) -> UploadServer:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _user(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if self.credentials == (user, password) else None

    async def _handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        user = ""
        if self.credentials is not None:
            found = self._user(request)
            if found is None:
                return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="logs"'})
            user = found
        if self.refuse is not None and (self.refuse_times is None or self.refuse_times > 0):
            if self.refuse_times is not None:
                self.refuse_times -= 1
            await request.read()
            return web.Response(status=self.refuse)
        if request.method == "PUT":
            if not self.put:
                return web.Response(status=405)
            data = await request.read()
            self.uploads.append(Upload("PUT", request.path, request.path.rsplit("/", 1)[-1], data, user))
            return web.Response(status=201)
        if request.method == "POST":
            form = await request.post()
            item = form.get("uploadfile")
            if not isinstance(item, web.FileField):
                return web.Response(status=400)
            self.uploads.append(Upload("POST", request.path, item.filename, item.file.read(), user))
            return web.Response(status=200)
        return web.Response(status=405)


class _NoPassive(FTPHandler):
    """An FTP server behind which passive mode does not work (a firewall): PASV and EPSV are refused."""

    def ftp_PASV(self, line: str) -> None:
        self.respond("502 Passive mode not allowed here.")

    def ftp_EPSV(self, line: str) -> None:
        self.respond("502 Passive mode not allowed here.")


class FtpServer:
    """pyftpdlib on 127.0.0.1 in its own thread; user `station` / `ftp-secret-pw` may write into `root`/logs."""

    USER = "station"
    PASSWORD = "ftp-secret-pw"

    def __init__(self, root: Path, *, passive: bool = True) -> None:
        self.root = root
        (root / "logs").mkdir(parents=True, exist_ok=True)
        authorizer = DummyAuthorizer()
        authorizer.add_user(self.USER, self.PASSWORD, str(root), perm="elradfmw")
        handler = type("Handler", (FTPHandler if passive else _NoPassive,), {})
        handler.authorizer = authorizer
        handler.passive_ports = None
        handler.auth_failed_timeout = 0.05
        self.commands: list[str] = []
        commands = self.commands

        def log_cmd(self: FTPHandler, cmd: str, arg: str, respcode: str, respstr: str) -> None:
            commands.append(f"{cmd} {respcode}")

        handler.log_cmd = log_cmd
        handler.log_cmds_list = ["PASV", "EPSV", "PORT", "EPRT", "STOR", "CWD", "USER", "PASS"]
        self.server = FTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"timeout": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"ftp://{self.USER}:{self.PASSWORD}@127.0.0.1:{self.port}/logs"

    def start(self) -> FtpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.server.close_all()
        self._thread.join(5)

    def files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in (self.root / "logs").iterdir() if p.is_file()}
