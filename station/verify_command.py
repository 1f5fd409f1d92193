"""`station verify`: a readable verdict for each OCMF record given as a string, a file of lines, or a
Transparenzsoftware XML file. Exit 0 when every record verifies, 1 when one does not, 2 when input is unusable."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from station.meter import ocmf
from station.meter.transparency import read_transparency_xml


def _inputs(items: Sequence[str]) -> list[tuple[str, str | None, str]]:
    """(OCMF text, key from the container or None, where it came from)."""
    out: list[tuple[str, str | None, str]] = []
    for item in items:
        if item.lstrip().startswith("OCMF|"):
            out.append((item.strip(), None, "argument"))
            continue
        path = Path(item)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ocmf.OcmfError(f"{item}: neither an OCMF string nor a readable file ({exc})") from None
        if text.lstrip().startswith("<"):
            out.extend((e.ocmf, e.public_key, f"{item} ({e.context or 'value'})") for e in read_transparency_xml(text))
        else:
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if not lines:
                raise ocmf.OcmfError(f"{item}: the file is empty")
            out.extend((line, None, f"{item}:{n}") for n, line in enumerate(lines, 1))
    return out


def transactions(records: Sequence[ocmf.OcmfRecord]) -> list[list[ocmf.OcmfRecord]]:
    """Group transaction records: one record holding begin and end stands alone; a begin record pairs with the next
    end record (meters that sign them separately)."""
    groups: list[list[ocmf.OcmfRecord]] = []
    pending: ocmf.OcmfRecord | None = None
    for record in records:
        if not record.is_transaction:
            continue
        if record.begin is not None and record.end is not None:
            groups.append([record])
        elif record.begin is not None:
            if pending is not None:
                groups.append([pending])
            pending = record
        elif record.end is not None:
            groups.append([pending, record] if pending is not None else [record])
            pending = None
    if pending is not None:
        groups.append([pending])
    return groups


def run_verify(inputs: Sequence[str], public_key: str | None, as_json: bool, out: TextIO) -> int:
    results: list[dict[str, Any]] = []
    records: list[ocmf.OcmfRecord] = []
    try:
        for text, container_key, origin in _inputs(inputs):
            record = ocmf.parse(text)
            key = public_key or container_key or record.embedded_public_key
            if not key:
                raise ocmf.OcmfError(f"{origin}: no public key; give --public-key")
            verdict = ocmf.verify(record, key)
            records.append(record)
            energy = record.energy_wh()
            results.append(
                {
                    "origin": origin,
                    "valid": verdict.valid,
                    "reason": verdict.reason,
                    "pagination": record.pagination,
                    "meter_serial": record.meter_serial,
                    "signature_algorithm": record.signature_algorithm,
                    "begin": record.begin.value_text if record.begin else None,
                    "end": record.end.value_text if record.end else None,
                    "unit": record.readings[0].unit,
                    "energy_wh": str(energy) if energy is not None else None,
                }
            )
    except ocmf.OcmfError as exc:
        if as_json:
            print(json.dumps({"error": str(exc), "records": results, "all_valid": False}), file=out)
        else:
            print(f"unusable input: {exc}", file=out)
        return 2
    problems = [p for group in transactions(records) for p in ocmf.check_transaction(group)]
    all_valid = all(r["valid"] for r in results)
    if as_json:
        print(json.dumps({"records": results, "transaction_problems": problems, "all_valid": all_valid}), file=out)
    else:
        for r in results:
            span = f"begin {r['begin']} -> end {r['end']} {r['unit']}" if r["begin"] and r["end"] else "reading"
            energy_text = f" ({r['energy_wh']} Wh)" if r["energy_wh"] is not None else ""
            word = "VALID  " if r["valid"] else "INVALID"
            print(
                f"{word} {r['pagination']:<8} MS={r['meter_serial']}  {span}{energy_text}  {r['signature_algorithm']}"
                + ("" if r["valid"] else f"  -- {r['reason']}"),
                file=out,
            )
        for problem in problems:
            print(f"transaction check: {problem}", file=out)
    return 0 if all_valid else 1
