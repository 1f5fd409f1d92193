"""What crosses the WebSocket before the `ocpp` library sees it: every frame from the CSMS is checked here first.

Owns the limits on a frame's shape that the library does not enforce: JSON nesting depth (the library and jsonschema
recurse over payloads; a frame of 100,000 brackets killed the connection with a RecursionError) and answers whose
message id is not the id of our one outstanding CALL (the library's `_get_specific_response` recursed once per stale
answer, so a burst of them ended every later CALL in a RecursionError). A frame that fails a check is dropped with a
reason; a CALL among them gets the CALLERROR the OCPP-J spec names, a CALLRESULT/CALLERROR never gets an answer.
Parsing here never recurses in Python: the C JSON decoder has its own recursion guard, and the depth is measured with
an explicit stack. This module decides about frames only; it sends and logs nothing itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# OCPP's deepest messages (2.0.1 SetChargingProfile with customData, NotifyReport) nest about 9 levels, counting the
# frame's own array. Anything far beyond that is not OCPP.
MAX_DEPTH = 32

CALL, CALLRESULT, CALLERROR = 2, 3, 4

# The CALLERROR code for a CALL that is not well-formed, per version: OCPP-J 1.6 §4.2.3 Table 7 spells it
# "FormationViolation"; 2.0.1 part 4 §4.3 Table 8 has "FormatViolation".
FORMAT_ERROR = {"1.6": "FormationViolation", "2.0.1": "FormatViolation"}
UNREADABLE_ID = "-1"


@dataclass(frozen=True)
class Verdict:
    """What to do with one frame: `accept` it (hand it to the library), or drop it, and if `reply` is set, send it."""

    accept: bool
    reason: str = ""
    reply: str | None = None  # a CALLERROR frame to send back
    message_type: int | None = None
    message_id: str | None = None


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether a parsed JSON value nests deeper than `limit` (the outermost container is level 1), without recursion
    and stopping as soon as it knows."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > limit:
            return True
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return False


def call_error(message_id: str, code: str, description: str) -> str:
    return json.dumps([CALLERROR, message_id, code, description[:255], {}])


def outgoing(frame: str) -> str:
    """A frame the station is about to send, as it may go out. The `ocpp` library's CALLERROR for a refused request
    echoes the request in its errorDetails (the whole payload, and jsonschema's message quoting the offending value):
    a CSMS's megabyte came back doubled, and a too-long AuthorizationKey came back (and into the trace) quoted without
    its key name. Our CALLERRORs carry the code and description only, with empty details as OCPP-J allows
    (2.0.1 part 4 §4.2.3: "If there are no error details you MUST fill in an empty object {}")."""
    if not frame.startswith(f"[{CALLERROR}"):
        return frame
    try:
        message = json.loads(frame)
    except ValueError:
        return frame
    if isinstance(message, list) and len(message) == 5 and message[0] == CALLERROR:
        description = message[3] if isinstance(message[3], str) else ""
        return json.dumps([CALLERROR, message[1], message[2], description[:255], {}])
    return frame


def call_id_of(frame: str) -> str | None:
    """The message id of a CALL we are about to send (our own frames: trusted, small), else None."""
    if not frame.lstrip().startswith(f"[{CALL}"):
        return None
    try:
        message = json.loads(frame)
    except ValueError:
        return None
    if isinstance(message, list) and len(message) >= 2 and message[0] == CALL and isinstance(message[1], str):
        return message[1]
    return None


def _unreadable(version: str, reason: str) -> Verdict:
    """A frame whose message id cannot be read. 2.0.1 answers it with a CALLERROR of id "-1" (part 4 §4.2.3,
    RpcFrameworkError: "MessageId could not be read"); OCPP-J 1.6 has no such rule, and a 1.6 station drops it."""
    if version == "1.6":
        return Verdict(False, reason)
    return Verdict(False, reason, call_error(UNREADABLE_ID, "RpcFrameworkError", reason))


def inspect(frame: str | bytes, *, version: str, awaiting: str | None) -> Verdict:
    """Check one frame from the CSMS. `awaiting` is the message id of our outstanding CALL, if any."""
    format_error = FORMAT_ERROR.get(version, "FormatViolation")
    if isinstance(frame, bytes):
        return _unreadable(version, "binary frame (OCPP-J uses text frames)")
    try:
        message = json.loads(frame)
    except RecursionError:
        return _unreadable(version, "nested too deep to parse")
    except ValueError:  # JSONDecodeError, and invalid surrogates
        return _unreadable(version, "not valid JSON")
    if not isinstance(message, list) or not message or not isinstance(message[0], int) or isinstance(message[0], bool):
        return _unreadable(version, "not an OCPP-J message array")
    kind = message[0]
    message_id = message[1] if len(message) > 1 and isinstance(message[1], str) else None
    if depth_exceeds(message, MAX_DEPTH):
        reply = None
        if kind == CALL:
            reply = call_error(message_id or UNREADABLE_ID, format_error, f"nested deeper than {MAX_DEPTH} levels")
        return Verdict(False, f"nested deeper than {MAX_DEPTH} levels", reply, kind, message_id)
    if kind in (CALLRESULT, CALLERROR) and (message_id is None or message_id != awaiting):
        # An answer to nothing we are waiting for: a late answer after a timeout, a repeat, or a hostile CSMS.
        # Never answered (a CALLERROR to a CALLRESULT could start a ping-pong) and never queued.
        return Verdict(False, "answer to no outstanding call", None, kind, message_id)
    return Verdict(True, message_type=kind, message_id=message_id)
