"""What a broken or hostile CSMS sends must get the right CALLERROR, leave the connection up and change nothing.

The CSMS here is a bare `websockets` server that speaks raw frames, so that it can send what no OCPP library would.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from websockets.asyncio.server import serve

from station.app import running_station
from station.config import parse_config
from tests.ocpp.raw_csms import RawCsms

BAD_FRAMES: list[tuple[str, str | None]] = [
    # The 1.6 codes (OCPP-J 1.6 §4.2.3 Table 7; errata §5.1/§5.2 keep the misspelt wire values).
    ('[2, "a1", "RemoteStartTransaction", {}]', "OccurenceConstraintViolation"),  # idTag missing
    ('[2, "a2", "RemoteStartTransaction", {"idTag": 5}]', "TypeConstraintViolation"),
    ('[2, "a3", "RemoteStartTransaction", {"idTag": "' + "x" * 5000 + '"}]', "TypeConstraintViolation"),  # CiString20
    ('[2, "a4", "RemoteStartTransaction", {"idTag": "T", "bogus": 1}]', "FormationViolation"),
    ('[2, "a5", "NoSuchAction", {}]', "NotImplemented"),
    # the plain UpdateFirmware without [firmware] allow_unsigned_16 (FirmwareManagement not claimed)
    (
        '[2, "a5b", "UpdateFirmware", {"location": "http://x/f", "retrieveDate": "2026-01-01T00:00:00Z"}]',
        "NotSupported",
    ),
    ('[2, "a6", "RemoteStopTransaction", {"transactionId": "abc"}]', "TypeConstraintViolation"),
    ('[2, "a7", "ChangeConfiguration", {"key": "HeartbeatInterval", "value": "\\u00e9\\ud83d\\ude00"}]', None),
]


async def test_malformed_frames_get_callerrors_and_change_nothing(tmp_path: Path) -> None:
    raw = RawCsms()
    async with serve(raw.handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as server:  # type: ignore[list-item]
        port = server.sockets[0].getsockname()[1]
        config = parse_config(
            {
                "station": {"id": "CP-BAD"},
                "csms": {"url": f"ws://127.0.0.1:{port}/ocpp"},
                "meter": {"transport": "simulated", "simulator": {"state": str(tmp_path / "m.json")}},
                "storage": {"path": str(tmp_path / "s.db")},
            }
        )
        async with running_station(config) as station:
            await asyncio.wait_for(raw.connected.wait(), 20)
            for frame, error in BAD_FRAMES:
                answer = await raw.send_raw(frame)
                if error is None:
                    assert answer[0] == 3 and answer[2] == {"status": "Rejected"}, answer
                else:
                    assert answer[0] == 4 and answer[2] == error, (frame[:60], answer)
            # Not OCPP at all: ignored or answered with a protocol error, never a crash.
            assert raw.connection is not None
            await raw.connection.send("this is not json")
            await raw.connection.send('{"an": "object"}')
            # The connection is still up and the station still answers.
            answer = await raw.send_raw('[2, "ok1", "GetConfiguration", {"key": ["HeartbeatInterval"]}]')
            assert answer[0] == 3 and answer[2]["configurationKey"][0]["value"] == "300"
            assert station.runtime.core.evses[1].transaction is None
            assert station.store.outbox_depth() == 0
