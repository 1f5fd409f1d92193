"""Turns the text a meter returned into a `SignedMeterRecord`: parsed, verified, and checked, never altered.

Every driver hands its meter's record through `examine_record`, so one place decides what "verified" means. A record
that fails a check is still returned (the meter's record is the legal truth and must reach the CSMS); it carries
`verified=False` and the problems found, and the caller logs and stores them.
"""

from __future__ import annotations

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


def reading_wh(text: str, tx: str) -> int | None:
    """The reading with TX `tx` (B or E) in Wh, or None when the record has none or is unusable."""
    try:
        record = ocmf.parse(text)
    except ocmf.OcmfError:
        return None
    for reading in record.readings:
        if reading.tx == tx:
            return to_wh(reading.value, reading.unit)
    return None


def to_wh(value: Decimal, unit: str) -> int | None:
    if unit == "kWh":
        return int((value * 1000).to_integral_value())
    if unit == "Wh":
        return int(value.to_integral_value())
    return None
