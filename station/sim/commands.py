"""The commands of `station sim csms` and its port, as data: what the `station` command line is built from (every
`station` command, `station run` too, builds its parser) without importing the CSMS simulator (station/sim/csms.py),
which a daemon never runs."""

from __future__ import annotations

from typing import Any

DEFAULT_PORT = 9000

_STATION = (("--station",), {"metavar": "ID", "help": "which station (default: the only one connected)"})

# (command, help, arguments): the one vocabulary of the CSMS's own prompt and of `station sim csms COMMAND`.
COMMANDS: list[tuple[str, str, list[tuple[tuple[str, ...], dict[str, Any]]]]] = [
    ("stations", "the stations connected now", []),
    (
        "remote-start",
        "start charging: RemoteStartTransaction (1.6) / RequestStartTransaction (2.0.1)",
        [
            (("--connector",), {"type": int, "default": 1, "help": "connector (1.6) / EVSE (2.0.1) id, default 1"}),
            (("--id-tag",), {"default": "T1", "help": "the id tag (1.6) / idToken (2.0.1), default T1"}),
            _STATION,
        ],
    ),
    (
        "remote-stop",
        "stop charging: RemoteStopTransaction (1.6) / RequestStopTransaction (2.0.1)",
        [
            (("--transaction",), {"metavar": "ID", "help": "the transaction id (default: the last one started)"}),
            _STATION,
        ],
    ),
    (
        "set",
        "change a setting: ChangeConfiguration KEY VALUE (1.6) / SetVariables Component.Variable VALUE (2.0.1)",
        [
            (
                ("key",),
                {"help": "1.6 key (HeartbeatInterval) or 2.0.1 Component.Variable (OCPPCommCtrlr.HeartbeatInterval)"},
            ),
            (("value",), {"help": "the new value"}),
            _STATION,
        ],
    ),
    (
        "get",
        "read settings: GetConfiguration [KEY...] (1.6) / GetVariables Component.Variable... (2.0.1)",
        [(("keys",), {"nargs": "*", "metavar": "KEY", "help": "keys to read (1.6: none = all)"}), _STATION],
    ),
    (
        "trigger",
        "ask the station to send a message now: TriggerMessage",
        [
            (("message",), {"help": "e.g. StatusNotification, MeterValues, Heartbeat, BootNotification"}),
            (("--connector",), {"type": int, "help": "connector (1.6) / EVSE (2.0.1) the message is about"}),
            _STATION,
        ],
    ),
    (
        "call",
        "send any CSMS-initiated message, e.g. call UnlockConnector '{\"connectorId\": 1}'",
        [
            (("action",), {"help": "the OCPP action, e.g. Reset, UnlockConnector, ChangeAvailability"}),
            (("payload",), {"nargs": "?", "default": "{}", "help": "its payload as JSON, as on the wire (camelCase)"}),
            _STATION,
        ],
    ),
    (
        "received",
        "what the stations sent (their CALLs), oldest first",
        [
            (("--last",), {"type": int, "default": 20, "metavar": "N", "help": "how many (default 20)"}),
            (("--action",), {"help": "only this action, e.g. MeterValues"}),
        ],
    ),
]
