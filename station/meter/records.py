"""Turns the text a meter returned into a `SignedMeterRecord`: parsed, verified, and checked, never altered.

Every driver hands its meter's record through `examine_record`, so one place decides what "verified" means. A record
that fails a check is still returned (the meter's record is the legal truth and must reach the CSMS); it carries
`verified=False` and the problems found, and the caller logs and stores them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from station.core.model import SignedMeterRecord
from station.meter import ocmf


def examine_record(
    text: str,
    public_key: str,
    *,
    context: str,
    expected_pagination: str | None = None,
) -> SignedMeterRecord:
    problems: list[str] = []
    signing_method = ""
    try:
        record = ocmf.parse(text)
    except ocmf.OcmfError as exc:
        return SignedMeterRecord(text, context=context, verified=False, problems=(f"not a usable OCMF record: {exc}",))
    signing_method = record.signature_algorithm
    try:
        verdict = ocmf.verify(record, public_key)
        if not verdict.valid:
            problems.append(f"signature does not verify: {verdict.reason}")
    except ocmf.OcmfError as exc:
        problems.append(f"cannot verify: {exc}")
    if expected_pagination is not None and record.pagination != expected_pagination:
        problems.append(
            f"record is {record.pagination}, expected {expected_pagination} (another transaction's record?)"
        )
    if context == "Transaction.End" and record.begin is not None and record.end is not None:
        problems.extend(ocmf.check_transaction([record]))
    return SignedMeterRecord(
        data=text,
        encoding="OCMF",
        signing_method=signing_method,
        context=context,
        verified=not problems,
        problems=tuple(problems),
    )


@dataclass(frozen=True)
class RecordFacts:
    id_tag: str
    begin_wh: int | None
    begin_at: datetime | None


def record_facts(text: str) -> RecordFacts | None:
    """Identification and begin reading of a record (for a transaction known only from the meter)."""
    try:
        record = ocmf.parse(text)
    except ocmf.OcmfError:
        return None
    begin = record.begin
    return RecordFacts(
        id_tag=record.identification,
        begin_wh=to_wh(begin.value, begin.unit) if begin else None,
        begin_at=ocmf_time(begin.time) if begin else None,
    )


def ocmf_time(text: str) -> datetime | None:
    """OCMF's "2024-05-01T10:15:00,000+0200 S" as an aware datetime (None when it is not that)."""
    stamp = text.split(" ", 1)[0].replace(",", ".")
    try:
        value = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        try:
            value = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            return None
    return value


def begin_wh(text: str) -> int | None:
    """The record's begin reading (TX B) in Wh, or None when it has none or is unusable."""
    try:
        reading = ocmf.parse(text).begin
    except ocmf.OcmfError:
        return None
    return to_wh(reading.value, reading.unit) if reading is not None else None


def end_wh(text: str) -> int | None:
    """The record's end reading in Wh, or None when it has none or is unusable. The one rule for "the end reading"
    (every driver's meterStop, both adapters' Transaction.End value): OCMF `TX` E, or L, R, A, P for a transaction
    the meter ended by a loss of power, an error, and the like (ocmf.END_CODES)."""
    try:
        reading = ocmf.parse(text).end
    except ocmf.OcmfError:
        return None
    return to_wh(reading.value, reading.unit) if reading is not None else None


def to_wh(value: Decimal, unit: str) -> int | None:
    if unit == "kWh":
        return int((value * 1000).to_integral_value())
    if unit == "Wh":
        return int(value.to_integral_value())
    return None
