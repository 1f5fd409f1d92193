"""The `ocpp` library's own log calls, brought into the station's log on the station's terms.

The library logs whole messages: every frame at info, and on a refused request `logger.exception` with the Python
repr of the payload and a traceback (a schema-invalid ChangeConfiguration of AuthorizationKey put the password in the
journal that way). Each adapter gets this logger instead: frames are left to the station's own trace and debug log,
a request the station answered with a CALLERROR becomes one plain line naming the action and the error code (no
payload, no traceback), and what remains goes through the station's redaction like every other line. Only a failure
inside one of our own handlers, which is a bug of ours, keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import structlog
from ocpp.exceptions import OCPPError

log = structlog.get_logger("station.ocpp.library")

DETAIL_LIMIT = 200


def _action_of(args: tuple[Any, ...]) -> str | None:
    for arg in args:
        action = getattr(arg, "action", None)
        if isinstance(action, str):
            return action[:64]
    return None


class LibraryLog:
    """Stands in for the `logging.Logger` the `ocpp` library's ChargePoint is given (it calls only these)."""

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        return None  # frames: the station's trace has them

    info = debug

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if msg.startswith("Received a CALLError"):
            return None  # the caller gets it as an exception and logs it in its own words
        log.warning("ocpp library warning", detail=msg[:DETAIL_LIMIT])

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if msg.startswith("Ignoring response with unknown unique id"):
            log.warning("answer to no outstanding call ignored")
            return None
        log.error("ocpp library error", detail=msg[:DETAIL_LIMIT])

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        exc = sys.exc_info()[1]
        action = _action_of(args)
        if isinstance(exc, OCPPError):
            # A request the station refused (schema, unknown action): the CSMS got its CALLERROR; one line suffices.
            log.info(
                "CSMS request answered with CALLERROR",
                action=action,
                code=exc.code,
                reason=str(exc.description)[:DETAIL_LIMIT],
            )
            return None
        if msg.startswith("Unable to parse message"):
            log.warning("CSMS frame not parsed", error=type(exc).__name__ if exc else None)
            return None
        # A handler of ours raised: a bug. The CSMS got InternalError; we want the traceback (redacted like any line).
        log.error("CSMS request failed in the station's handler", action=action, exc_info=exc)

    critical = error
