"""Logging set-up: structlog JSON lines for journald/stderr in service mode, readable console lines at a terminal.

Secrets never reach a log line: values under secret-looking keys are replaced, and a URL's user:password part and
Authorization headers inside any string are masked, whatever logger produced them.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

LogFormat = Literal["auto", "json", "console"]

SECRET_KEYS = re.compile(r"pass(word)?|secret|token|authorization|auth_?key|private|client_key|credential", re.I)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s:]+:[^/@\s]+@", re.I)
_AUTH_HEADER = re.compile(r"(?P<name>authorization['\"]?\s*[:=]\s*['\"]?)(basic|bearer)\s+[A-Za-z0-9+/=._-]+", re.I)
_KEY_VALUE = re.compile(
    r"(?P<name>['\"]?(?:AuthorizationKey|BasicAuthPassword|basic_auth_password|password)['\"]?\s*[:=]\s*['\"]?)"
    r"[^'\"\s,}]+",
    re.I,
)
# An OCPP frame setting a secret: 1.6 {"key": "AuthorizationKey", "value": ...}, 2.0.1 {..."BasicAuthPassword"},
# "attributeValue": ...}.
_OCPP_SECRET = re.compile(
    r'(?P<head>"(?:AuthorizationKey|BasicAuthPassword)"[^\[\]]{0,120}?"(?:value|attributeValue)"\s*:\s*")[^"]*"'
)
_OCPP_SECRET_BEFORE = re.compile(
    r'(?P<head>"(?:value|attributeValue)"\s*:\s*")[^"]*(?P<tail>"[^\[\]]{0,120}?"(?:AuthorizationKey|BasicAuthPassword)")'
)
MASK = "***"


def redact_text(text: str) -> str:
    text = _OCPP_SECRET.sub(lambda m: f'{m["head"]}{MASK}"', text)
    text = _OCPP_SECRET_BEFORE.sub(lambda m: f"{m['head']}{MASK}{m['tail']}", text)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m['name']}{MASK}", text)
    return _KEY_VALUE.sub(lambda m: f"{m['name']}{MASK}", text)


def _redact(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return value
    if isinstance(value, str):
        return redact_text(value)
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


def configure(level: str = "info", fmt: LogFormat = "auto") -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info if json_lines else structlog.dev.set_exc_info,
        redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        processors=[*shared, renderer],
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
                redact_secrets,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
