"""Logging set-up: structlog JSON lines for journald/stderr in service mode, readable console lines at a terminal.

Secrets never reach a log line: values under secret-looking keys are replaced, and a URL's user:password part and
Authorization headers inside any string are masked, whatever logger produced them. Beside journald the daemon keeps
its own JSON lines in a bounded, rotating file (`LogFile`), the same redacted lines, so that a log upload to the CSMS
(station/logupload/) can send the daemon's own log for a period.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Literal

import structlog

LogFormat = Literal["auto", "json", "console"]

SECRET_KEYS = re.compile(r"pass(word)?|secret|token|authorization|auth_?key|private|client_key|credential", re.I)
MASK = "***"

# Every pattern below runs in time linear in the text: each repetition is bounded or its character classes cannot
# overlap with what follows, so no input makes the regex engine backtrack over the text again and again (an unbounded
# scheme in the URL pattern made a 50,000-letter word take 22 s).
_URL_CREDENTIALS = re.compile(r"\b(?P<scheme>[a-z][a-z0-9+.-]{0,30}://)[^/@\s:]{1,256}:[^/@\s]{1,256}@", re.I)
_AUTH_HEADER = re.compile(
    r"(?P<name>authorization['\"]?\s{0,4}[:=]\s{0,4}['\"]?)(?:basic|bearer)\s{1,4}[A-Za-z0-9+/=._-]+", re.I
)
_KEY_VALUE = re.compile(
    r"(?P<name>['\"]?(?:AuthorizationKey|BasicAuthPassword|basic_auth_password|http_password|password)['\"]?"
    r"\s{0,4}[:=]\s{0,4}['\"]?)[^'\"\s,}]+",
    re.I,
)
# A PEM private key, whole or cut off by truncation.
_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z ]{0,24}PRIVATE KEY-----.*?(?:-----END [A-Z ]{0,24}PRIVATE KEY-----|\Z)", re.S
)
# The names under which OCPP carries a secret in a generic value field: 1.6 ChangeConfiguration {"key":
# "AuthorizationKey", "value": ...}, 2.0.1 SetVariables {"variable": {"name": "BasicAuthPassword"}, "attributeValue":
# ...}. Key and value may come in any order and be far apart, and a trace or log line may be cut between them, so a
# text that names one anywhere has *every* such value field masked, in JSON, Python repr and key=value forms alike.
SECRET_CARRIERS = ("authorizationkey", "basicauthpassword")
_VALUE_FIELD = re.compile(
    r"(?P<name>(?:\\?['\"])?(?:value|attributeValue|attribute_value)(?:\\?['\"])?\s{0,4}[:=]\s{0,4})"
    r"(?:\"(?:[^\"\\]|\\.)*(?:\"|\Z)"  # a JSON string
    r"|'(?:[^'\\]|\\.)*(?:'|\Z)"  # a Python repr string
    r"|\\\"(?:[^\"\\]|\\[^\"])*(?:\\\"|\Z)"  # a JSON string inside a JSON string (a frame echoed in an error)
    r"|[^\s,}\]]+)"  # a bare word (key=value)
)


def _masked_value(match: re.Match[str]) -> str:
    """The value field with its value masked, quoted as it was, so that a masked JSON frame stays JSON."""
    value = match.group(0)[len(match["name"]) :]
    for quote in ('\\"', '"', "'"):
        if value.startswith(quote):
            return f"{match['name']}{quote}{MASK}{quote}"
    return f"{match['name']}{MASK}"


def redact_text(text: str) -> str:
    """`text` with every secret it may carry masked. Linear in the length of the text; each pattern runs only where
    its fixed part occurs (most text has none)."""
    lower = text.lower()
    if any(name in lower for name in SECRET_CARRIERS):
        text = _VALUE_FIELD.sub(_masked_value, text)
    if "private key-----" in lower:
        text = _PRIVATE_KEY.sub(MASK, text)
    if "://" in text:
        text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    if "authorization" in lower:
        text = _AUTH_HEADER.sub(lambda m: f"{m['name']}{MASK}", text)
    if "password" in lower or "authorizationkey" in lower:
        text = _KEY_VALUE.sub(lambda m: f"{m['name']}{MASK}", text)
    return text


def loggable(text: str, limit: int) -> str:
    """At most `limit` characters of `text` (plus a note of how much was cut), secrets masked: for frames from a peer,
    which may be a megabyte. Whether the text carries a secret is decided on the whole text (a cheap substring test),
    so that a cut between a secret's name and its value still masks the value."""
    if len(text) <= limit:
        return redact_text(text)
    carries = any(name in text.lower() for name in SECRET_CARRIERS)
    head = text[:limit]
    if carries:
        head = _VALUE_FIELD.sub(_masked_value, head)
    return redact_text(head) + f"... [{len(text) - limit} more characters]"


LOG_VALUE_LIMIT = 8192  # characters of one string in a log line; a peer's megabyte never becomes a log line


def _redact(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return MASK  # our own log calls never nest this deep; what does is not shown rather than shown unredacted
    if isinstance(value, str):
        return loggable(value, LOG_VALUE_LIMIT)
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and SECRET_KEYS.search(k) else _redact(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(_redact(v, depth + 1) for v in value)
    return value


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the last word before rendering."""
    for key in list(event_dict):
        if SECRET_KEYS.search(key):
            event_dict[key] = MASK
        else:
            event_dict[key] = _redact(event_dict[key])
    return event_dict


LOG_LINE_LIMIT = 64 * 1024  # bytes of one line in the log file; a longer line is replaced by a note of its size


class LogFile:
    """The daemon's own log: JSON lines in `path`, rotated to path.1 .. path.KEEP when the file would pass
    `max_bytes`, so it never holds more than about (keep + 1) * max_bytes. Written from the logging processors (any
    thread); a write that fails (a full disk) switches the file off with one line on stderr rather than failing the
    log call."""

    def __init__(self, path: str | Path, max_bytes: int, keep: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()
        self._out: Any = None
        self._size = 0
        self.broken = False

    def files(self) -> list[Path]:
        """The files holding lines now, oldest first."""
        rotated = [self.path.with_name(f"{self.path.name}.{n}") for n in range(self.keep, 0, -1)]
        return [p for p in [*rotated, self.path] if p.is_file()]

    def write(self, line: str) -> None:
        data = line.encode("utf-8", "replace")
        if len(data) >= LOG_LINE_LIMIT:
            data = json.dumps({"event": "log line too long; left out", "bytes": len(data)}).encode()
        data += b"\n"
        with self._lock:
            if self.broken:
                return
            try:
                if self._out is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._out = open(self.path, "ab")  # noqa: SIM115 -- kept open for the daemon's life
                    self._size = self._out.tell()
                if self._size and self._size + len(data) > self.max_bytes:
                    self._rotate()
                self._out.write(data)
                self._out.flush()
                self._size += len(data)
            except OSError as exc:
                self.broken = True
                print(f"station: log file {self.path} switched off: {exc}", file=sys.stderr)

    def _rotate(self) -> None:
        self._out.close()
        for n in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._out = open(self.path, "ab")  # noqa: SIM115
        self._size = 0

    def close(self) -> None:
        with self._lock:
            if self._out is not None:
                self._out.close()
                self._out = None


def _to_file(log_file: LogFile) -> Any:
    """structlog processor: the redacted event as one JSON line in the log file; the event goes on unchanged."""

    def processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        line = {k: v for k, v in event_dict.items() if not k.startswith("_")}
        log_file.write(json.dumps(line, default=str, ensure_ascii=False))
        return event_dict

    return processor


def configure(level: str = "info", fmt: LogFormat = "auto", log_file: LogFile | None = None) -> None:
    """Log lines to stderr (journald) and, with `log_file`, the same lines as JSON into that file too."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Tracebacks become text before the redaction, so that they are masked and bounded like any other value.
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    tee = [_to_file(log_file)] if log_file is not None else []
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        processors=[*shared, *tee, renderer],
        cache_logger_on_first_use=False,
    )
    # Libraries log through the stdlib: route them through the same redaction and renderer.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                redact_secrets,
                *tee,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
