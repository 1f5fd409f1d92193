"""A transaction remembers its meter (issue 17 item 5): a record signed by a meter that is swapped before the record
reaches the CSMS still goes out with the key of the meter that signed it, and verifies; the new meter's key is what
MeterPublicKey1 shows afterwards. The meter's identity and key are stored with the transaction in the same commit
as its start (OCA app note: the public key belongs to the signed value it verifies)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from station.app import running_station
from station.config import parse_config
from station.demo.csms import LocalCsms
from station.meter import ocmf
from station.ocpp.signed_value import parse_oca_public_key

pytestmark = pytest.mark.slow  # two runs of the station, a simulated meter signing in each

STATION = "CP-SWAP"


def config(tmp_path: Path, url: str, meter_state: str) -> Any:
    return parse_config(
        {
            "station": {"id": STATION},
            "csms": {"url": url, "ocpp_version": "1.6", "reconnect_min": 0.1, "reconnect_max": 1},
            "meter": {
                "transport": "simulated",
                "simulator": {"state": str(tmp_path / meter_state), "signing_time": 0.1},
            },
            "storage": {"path": str(tmp_path / "s.db")},
        }
    )


async def test_a_record_signed_before_a_meter_swap_goes_out_with_the_old_meters_key(tmp_path: Path) -> None:
    csms = await LocalCsms().start()
    async with running_station(config(tmp_path, csms.url, "old-meter.json")) as station:
        await csms.wait_for("StatusNotification", lambda p: p["status"] == "Available")
        old_key = station.runtime.meter_key(1)
        old_serial = station.runtime.meter_state(1).identity.serial_number  # type: ignore[union-attr]
        await csms.stop()  # the CSMS becomes unreachable: what follows is queued
        await csms.wait_until(lambda: not station.runtime.csms.online, timeout=10)
        outcome = station.runtime.remote_start(1, "TAG-SWAP")
        assert outcome.accepted and outcome.transaction is not None
        ref = outcome.transaction.ref
        await station.runtime.idle()
        assert station.runtime.remote_stop(ref).accepted
        await station.runtime.idle()
        stored = station.store.transaction(ref)
        assert stored is not None and stored.transaction.meter is not None
        assert stored.transaction.meter.public_key == old_key and stored.transaction.meter.serial == old_serial

    # The technician swaps the meter: another device (another key) in its place; the CSMS is back.
    csms = await LocalCsms().start()
    try:
        async with running_station(config(tmp_path, csms.url, "new-meter.json")) as station:
            stop = await csms.wait_for("StopTransaction", timeout=30)
            new_key = station.runtime.meter_key(1)
            assert new_key and new_key != old_key
            value = json.loads(stop.payload["transactionData"][-1]["sampledValue"][-1]["value"])
            record = base64.b64decode(value["signedMeterData"]).decode()
            assert parse_oca_public_key(value["publicKey"]) == old_key
            assert ocmf.verify(record, old_key).valid and not ocmf.verify(record, new_key).valid
            keys = await csms.get_configuration(STATION, ["MeterPublicKey1"])
            assert parse_oca_public_key(keys["MeterPublicKey1"]) == new_key
    finally:
        await csms.stop()
    assert csms.violations == []
