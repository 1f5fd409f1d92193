"""`station diag ...`: asks the running daemon over its diagnostics socket and prints the answer for a person or,
with --json, for a machine. Finds the socket through the same config file the daemon uses, or where the service
unit puts it. It only reads; it never changes the daemon's config or state."""

from __future__ import annotations

import json
import os
import socket
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from station.meter import ocmf

DEFAULT_CONFIG = "/etc/station/station.toml"
DEFAULT_SOCKET = "/run/station/diag.sock"  # systemd/station.service: RuntimeDirectory=station


class DiagError(Exception):
    pass


def find_socket(socket_path: str | None, config: str | None) -> str:
    """Where the daemon listens: --socket; else [diagnostics] socket of --config, of $STATION_CONFIG or of the
    default config file; else, when no config file can be read (a technician not allowed to read the one holding the
    passwords), the service unit's socket. Only the socket key is read: a config with an unrelated mistake still
    leads to the daemon that runs on it."""
    if socket_path:
        return socket_path
    named = config or os.environ.get("STATION_CONFIG") or None
    path = Path(named or DEFAULT_CONFIG)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        if named is not None:
            raise DiagError(f"cannot read {path}: {exc.strerror or exc}; give --socket PATH instead") from None
        if Path(DEFAULT_SOCKET).exists():
            return DEFAULT_SOCKET
        raise DiagError(
            f"no daemon found: no readable config at {DEFAULT_CONFIG} and no socket at {DEFAULT_SOCKET}; "
            "give --config FILE (or set STATION_CONFIG) or --socket PATH"
        ) from None
    except UnicodeDecodeError:
        raise DiagError(f"{path}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DiagError(f"{path}: not valid TOML: {exc}") from None
    section = data.get("diagnostics")
    found = section.get("socket") if isinstance(section, dict) else None
    if isinstance(found, str) and found:
        return found
    raise DiagError(f"{path}: diagnostics.socket is not set, so the daemon offers no diagnostics")


def ask(path: str, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """One request, one answer."""
    for answer in _lines(path, request, timeout):
        return answer
    raise DiagError(f"the daemon at {path} closed the connection without an answer")


def follow(path: str, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The first answer, then every line the daemon streams after it (`log` with follow), until it hangs up."""
    yield from _lines(path, request, None)


def _lines(path: str, request: dict[str, Any], timeout: float | None) -> Iterator[dict[str, Any]]:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(json.dumps(request).encode() + b"\n")
            for line in sock.makefile("rb"):
                answer: dict[str, Any] = json.loads(line)
                if answer.get("ok") is False:  # the first answer, or a stream ended by the daemon (a lagging follower)
                    raise DiagError(str(answer.get("error", "the daemon refused the request")))
                yield answer
    except FileNotFoundError:
        raise DiagError(f"no diagnostics socket at {path}: is the daemon running with this config?") from None
    except PermissionError:
        raise DiagError(f"no permission for {path}: run as the service user or a member of its group") from None
    except OSError as exc:
        raise DiagError(f"cannot talk to the daemon at {path}: {exc}") from None


_MESSAGE_TYPES = {2: "CALL", 3: "RESULT", 4: "ERROR"}


def format_frame(item: dict[str, Any]) -> str:
    """One OCPP frame for a person: time, direction, message type and action, short message id, payload."""
    at = item["at"][11:23]
    arrow = "->" if item["direction"] == "out" else "<-"
    text = item["frame"]
    try:
        message = json.loads(text)
        kind = _MESSAGE_TYPES.get(message[0], str(message[0]))
        unique_id = str(message[1])[:8]
        if message[0] == 2:
            head, payload = f"{kind} {message[2]}", message[3]
        elif message[0] == 3:
            head, payload = kind, message[2]
        else:
            head, payload = f"{kind} {message[2]}: {message[3]}", message[4] if len(message) > 4 else {}
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        return f"{at} {arrow} {head} [{unique_id}] {body}"
    except (ValueError, LookupError, TypeError):
        return f"{at} {arrow} (not OCPP) {text}"


def _yes(value: object) -> str:
    return "yes" if value else "no"


def _signed(tx: dict[str, Any]) -> str:
    if not tx["records"]:
        return "MISSING" if tx["state"] == "ended" else "not signed yet"
    return "yes" if tx["verified"] else "NO (see the records)"


def print_status(status: dict[str, Any], out: TextIO) -> None:
    o = status["ocpp"]
    print(f"station {status['station_id']}", file=out)
    print(
        f"  CSMS    {'connected' if o['connected'] else 'NOT connected'} ({o['url']}, OCPP {o['version'] or '-'})"
        f"; queue {o['queue_depth']} message(s); last error: {o['last_error'] or 'none'}",
        file=out,
    )
    cert = o.get("client_certificate")
    if cert:
        refused = f"; {cert['refused_by_csms']} refused by the CSMS" if cert["refused_by_csms"] else ""
        pending = "; renewal pending" if cert["renewal_pending"] else ""
        print(
            f"  client certificate {cert['subject']} ({'renewed' if cert['renewed'] else 'from the config'}), "
            f"valid to {cert['valid_to']}{refused}{pending}",
            file=out,
        )
    meters = status.get("meters", [status["meter"]])
    for m in meters:
        where = f" (EVSE {m['evse_id']}, {m['bus']} id {m['device_id']})" if len(meters) > 1 else ""
        print(
            f"  meter   link {m['link']}; {m['model']} serial {m['serial'] or '?'} firmware {m['firmware'] or '?'}"
            f"{where}; last error: {m['last_error'] or 'none'}",
            file=out,
        )
        print(f"          public key {m['public_key'] or '?'}", file=out)
    for e in status.get("ev", []):
        faults = ", ".join(f"{k} ({v})" if v else k for k, v in e["faults"].items()) or "none"
        print(
            f"  EV side EVSE {e['evse_id']} ({e['controller']}{'' if e['online'] else ', NOT answering'}): "
            f"pilot {e['pilot']}, relay {e['relay']}, lock {e['lock']}, limit {e['current_limit_a']:g} A; "
            f"faults: {faults}",
            file=out,
        )
    for c in status["connectors"]:
        tx = c["transaction"]
        running = f"; transaction {tx['ref']} since {tx['started_at']} ({tx['id_tag']})" if tx else ""
        print(f"  connector {c['id']}: {c['state']}{running}", file=out)
    if status.get("failed_messages"):
        print(f"  WARNING: {status['failed_messages']} message(s) the CSMS refused are kept aside", file=out)


def print_transactions(transactions: list[dict[str, Any]], out: TextIO) -> None:
    if not transactions:
        print("no transactions yet", file=out)
    for tx in transactions:
        print_transaction(tx, out)


def print_security_log(events: list[dict[str, Any]], out: TextIO) -> None:
    if not events:
        print("no security events", file=out)
    for event in events:
        print(f"{event['at']}  {event['type']}  {event['tech_info']}", file=out)


def print_transaction(tx: dict[str, Any], out: TextIO) -> None:
    running = tx["state"] != "ended"
    stop = "running" if running and tx["meter_stop_wh"] is None else f"{tx['meter_stop_wh']} Wh"
    delivered = tx["delivered_at"] or ("running" if running else "not yet")
    print(
        f"transaction {tx['ref']} (CSMS id {tx['csms_transaction_id'] or '-'}): {'running' if running else 'ended'}, "
        f"{tx['meter_start_wh']} Wh -> {stop}, stop reason {tx['stop_reason'] or '-'}, "
        f"signed record verified: {_signed(tx)}, delivered: {delivered}",
        file=out,
    )
    m = tx.get("meter")
    if m:
        print(f"  meter {m['model']} serial {m['serial']} firmware {m['firmware'] or '?'}", file=out)
        print(f"    public key {m['public_key'] or '?'}", file=out)
    else:
        print("  meter not recorded (stored before transactions remembered their meter)", file=out)
    for r in tx["records"]:
        problems = "; ".join(r["problems"]) or "none"
        print(f"  {r['context']}: verified {_yes(r['verified'])}, problems: {problems}", file=out)
        try:
            record = ocmf.parse(r["data"])
            print(f"    {record.pagination}, meter {record.meter_serial}, energy {record.energy_wh()} Wh", file=out)
        except ocmf.OcmfError:
            pass
        print(f"    {r['data']}", file=out)


def print_meter(meter: dict[str, Any], out: TextIO) -> None:
    print(f"meter {meter['model']} serial {meter['serial']} firmware {meter['firmware']}", file=out)
    print("MID data:", file=out)
    for obis, reading in meter["readings"].items():
        print(f"  {obis}  {reading['value']} {reading['unit']}  ({reading['name']})", file=out)
    print(f"  public key {meter['public_key']}", file=out)
    print(f"live: {meter['power_w']:.0f} W, U {meter['voltage_v']} V, I {meter['current_a']} A", file=out)


def print_meter_test(result: dict[str, Any], out: TextIO) -> None:
    for step in result["steps"]:
        mark = "ok  " if step["ok"] else "FAIL"
        print(f"  [{mark}] {step['step']} ({step['ms']} ms){': ' + step['error'] if not step['ok'] else ''}", file=out)
    print(("PASS: " if result["ok"] else "FAIL: ") + result["verdict"], file=out)


# --------------------------------------------------------------------------- `diag schedule` (issue 19 part 5)


def _amps(value: float) -> str:
    return f"{value:g} A"


def _profile_name(profile: dict[str, Any]) -> str:
    return f"profile {profile['id']} {profile['purpose']}, stack level {profile['stack_level']}"


def limit_text(evse: dict[str, Any]) -> str:
    """One EVSE's limit now in words, e.g. "limit now: 10 A (profile 2 TxDefaultProfile, stack level 0)"; the web
    page shows the same line above the EVSE's chart."""
    if not evse["controllable"]:
        return f"its current cannot be controlled (charge controller {evse['controller']}): no limit is applied"
    hardware = _amps(evse["max_current_a"])
    if not evse["profiles"]:
        return f"no charging profiles: the controller's maximum {hardware}"
    by = {p["id"]: p for p in evse["profiles"]}
    names = "; ".join(_profile_name(by[i]) for i in evse["set_by"] if i in by)
    applied, allowed = evse["applied_a"], evse["profile_limit_a"]
    if applied is None:
        return f"limit now: the controller's maximum {hardware} (no profile limits it now)"
    text = f"limit now: {_amps(applied)}"
    if allowed is not None and applied < allowed:
        return f"{text} (the station's maximum shared between the charging EVSEs; the profiles allow {_amps(allowed)})"
    return f"{text} ({names})" if names else f"{text} (the controller's maximum)"


def _validity(profile: dict[str, Any]) -> str:
    start, end = profile["valid_from"], profile["valid_to"]

    def utc(at: str) -> str:
        return at[:16].replace("T", " ") + " UTC"

    if start is None and end is None:
        text = "valid always"
    elif end is None:
        text = f"valid from {utc(start)}"
    elif start is None:
        text = f"valid until {utc(end)}"
    else:
        text = f"valid {utc(start)} .. {utc(end)}"
    return text if profile["valid_now"] else text + " (NOT valid now)"


def _print_periods(schedule: dict[str, Any], out: TextIO) -> None:
    start = datetime.fromisoformat(schedule["start"])
    print(f"  next 24 h from {start.astimezone():%a %H:%M} local ({start.astimezone(UTC):%H:%M} UTC):", file=out)
    print("    from (local)  from (UTC)  limit", file=out)
    for period in schedule["periods"]:
        at = datetime.fromisoformat(period["at"])
        phases = period["phases"]
        extra = f", {phases} phase{'s' if phases != 1 else ''}" if phases is not None else ""
        print(
            f"    {at.astimezone():%a %H:%M}     {at.astimezone(UTC):%a %H:%M}   {_amps(period['limit'])}{extra}",
            file=out,
        )
    if schedule["truncated"]:
        print(
            f"    ... more periods within the 24 h (only the first {len(schedule['periods'])} are reported)", file=out
        )


def _print_profiles(profiles: list[dict[str, Any]], out: TextIO) -> None:
    for p in profiles:
        kind = p["kind"] + (f" {p['recurrency']}" if p["recurrency"] else "")
        where = "every EVSE" if p["evse_id"] == 0 and p["purpose"] == "TxDefaultProfile" else f"EVSE {p['evse_id']}"
        print(
            f"    {_profile_name(p)}, {where}, {kind}, in {p['unit']}, {p['periods']} period(s), {_validity(p)}",
            file=out,
        )


def print_schedule(report: dict[str, Any], out: TextIO) -> None:
    if not report["available"]:
        print("no EVSE's current can be controlled: the station refuses charging profiles", file=out)
    for evse in report["evses"]:
        shape = f"{evse['controller']}, {_amps(evse['max_current_a'])} max, {evse['phases']} phases"
        print(f"EVSE {evse['evse_id']} ({shape}): {limit_text(evse)}", file=out)
        if evse["profiles"]:
            print("  profiles that apply:", file=out)
            _print_profiles(evse["profiles"], out)
        if evse["controllable"] and evse["profiles"]:
            _print_periods(evse["schedule"], out)
    total = report["station"]
    if total is not None and (total["profiles"] or len(report["evses"]) != 1):
        cap = total["station_cap_a"]
        if cap is None:
            print(
                f"station (all EVSEs): no station maximum now; the EVSEs' maximum {_amps(total['max_current_a'])}",
                file=out,
            )
        else:
            print(f"station (all EVSEs): the station maximum caps the sum at {_amps(cap)} now", file=out)
        if total["profiles"]:
            print("  profiles that apply:", file=out)
            _print_profiles(total["profiles"], out)
            _print_periods(total["schedule"], out)
