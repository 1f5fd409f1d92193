"""The `station` command: run the daemon, the demo, the meter simulator, and the offline tools.

Owns argument parsing and exit codes only; every command's work lives in its own module.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from station.config import METER_MODELS, ConfigError, load_config


def _setup_logging(level: str = "info", fmt: str = "auto") -> None:
    from station.logs import configure

    configure(level, fmt)  # type: ignore[arg-type]


def _cmd_run(args: argparse.Namespace) -> int:
    from station.app import run_daemon

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    _setup_logging(args.log_level, args.log_format)
    return asyncio.run(run_daemon(config))


def _cmd_demo(args: argparse.Namespace) -> int:
    from station.demo.session import print_result, run_demo

    _setup_logging("debug" if args.verbose else "error")

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    try:
        result = asyncio.run(
            run_demo(seconds=args.seconds, ocpp_version=args.ocpp, meter_model=args.meter_model, say=say)
        )
    except (TimeoutError, ValueError) as exc:
        print(f"demo failed: {exc!r}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.as_json()))
    else:
        print_result(result)
    return 0 if result.verified else 1


def _cmd_meter_sim(args: argparse.Namespace) -> int:
    from station.meter.sim.server import run_meter_sim

    _setup_logging(args.log_level)
    return asyncio.run(
        run_meter_sim(
            args.model,
            args.port,
            state=Path(args.state) if args.state else None,
            ledger=Path(args.ledger) if args.ledger else None,
            baudrate=args.baudrate,
            device_id=args.device_id,
            power_w=args.power_w,
            signing_time=args.signing_time,
        )
    )


def _cmd_nullmodem(args: argparse.Namespace) -> int:
    from station.meter.nullmodem import VirtualNullModem

    async def run() -> int:
        cable = await VirtualNullModem(baudrate=args.baudrate or None).start()
        print(json.dumps({"a": cable.path_a, "b": cable.path_b}), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await cable.stop()
        return 0

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return 0


def _cmd_config_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(f"{exc.source}: {len(exc.problems)} problem(s):")
        for problem in exc.problems:
            print(f"  - {problem}")
        return 1
    print(
        f"{args.file}: OK (station {config.station.id}, OCPP {config.csms.ocpp_version}, meter {config.meter.model} "
        f"over {config.meter.transport})"
    )
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from station.verify_command import run_verify

    return int(run_verify(args.inputs, args.public_key, args.json, sys.stdout))


def _cmd_diag(args: argparse.Namespace) -> int:
    from station.diag import client

    socket_path = _diag_socket(args)
    if socket_path is None:
        return 2
    request: dict[str, object] = {"command": args.diag_command}
    if args.diag_command in ("transactions", "log"):
        request["last"] = args.last
    if args.diag_command == "transaction":
        request["id"] = args.id
    if args.diag_command == "log":
        return _diag_log(socket_path, request, follow=args.follow, as_json=args.json)
    try:
        answer = client.ask(socket_path, request)
    except client.DiagError as exc:
        print(f"diag: {exc}", file=sys.stderr)
        return 1
    answer.pop("ok", None)
    if args.json:
        print(json.dumps(next(iter(answer.values())), indent=2, default=str))
        return 0
    if args.diag_command == "status":
        client.print_status(answer["status"], sys.stdout)
    elif args.diag_command == "meter":
        client.print_meter(answer["meter"], sys.stdout)
    elif args.diag_command == "meter-test":
        client.print_meter_test(answer["meter_test"], sys.stdout)
        return 0 if answer["meter_test"]["ok"] else 1
    elif args.diag_command == "transactions":
        for tx in answer["transactions"]:
            client.print_transaction(tx, sys.stdout)
    elif args.diag_command == "security-log":
        for event in answer["security_log"]:
            print(f"{event['at']}  {event['type']}  {event['tech_info']}")
    else:
        client.print_transaction(answer["transaction"], sys.stdout)
    return 0


def _diag_log(socket_path: str, request: dict[str, object], *, follow: bool, as_json: bool) -> int:
    from station.diag import client

    request["follow"] = follow
    try:
        for answer in client.follow(socket_path, request):
            for item in answer.get("log", []) + ([answer["frame"]] if "frame" in answer else []):
                print(json.dumps(item) if as_json else client.format_frame(item), flush=True)
    except client.DiagError as exc:
        print(f"diag: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _diag_socket(args: argparse.Namespace) -> str | None:
    """The diagnostics socket: --socket, or [diagnostics] socket of the config file. Prints why when there is none."""
    if args.socket:
        return str(args.socket)
    try:
        socket_path = load_config(args.config).diagnostics.socket
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None
    if not socket_path:
        print(f"{args.config}: diagnostics.socket is not set, so the daemon offers no diagnostics", file=sys.stderr)
        return None
    return socket_path


def _cmd_export(args: argparse.Namespace) -> int:
    from station.diag import client

    socket_path = _diag_socket(args)
    if socket_path is None:
        return 2
    try:
        answer = client.ask(socket_path, {"command": "export", "id": args.transaction, "format": args.format})
    except client.DiagError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 1
    if args.out in (None, "-"):
        sys.stdout.write(answer["export"])
    else:
        Path(args.out).write_text(answer["export"], encoding="utf-8")
        print(f"wrote {args.out}: open it in the S.A.F.E. Transparenzsoftware to check the bill", file=sys.stderr)
    if not answer["verified"]:
        print("WARNING: the station could not verify this transaction's signed record(s)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="station", description="EV charging station controller")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the daemon")
    p.add_argument("--config", required=True, help="the TOML config file")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-format",
        default="auto",
        choices=["auto", "json", "console"],
        help="auto: console at a terminal, else JSON",
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("demo", help="one whole signed charging session on the built-in simulators")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the story")
    p.add_argument("--ocpp", default="1.6", choices=["1.6", "2.0.1"], help="OCPP version to use")
    p.add_argument("--seconds", type=float, default=4.0, help="how long to charge")
    p.add_argument("--meter-model", default="smartme", choices=list(METER_MODELS), help="which simulated meter")
    p.add_argument("--verbose", action="store_true", help="show the daemon's log lines")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("meter-sim", help="serve a simulated meter on a serial device")
    p.add_argument("--model", default="smartme", choices=list(METER_MODELS))
    p.add_argument("--port", required=True, help="serial device path, e.g. one end of `station nullmodem`")
    p.add_argument("--state", help="file of the meter's non-volatile memory (created if missing)")
    p.add_argument("--ledger", help="JSON-lines file: every record the meter signs is appended")
    p.add_argument("--baudrate", type=int, default=9600)
    p.add_argument("--device-id", type=int, default=1)
    p.add_argument("--power-w", type=float, default=11000.0, help="simulated charging power")
    p.add_argument("--signing-time", type=float, default=0.5, help="seconds the meter takes to sign")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_cmd_meter_sim)

    p = sub.add_parser("nullmodem", help="make a virtual serial cable (two ptys back to back) and print its ends")
    p.add_argument("--baudrate", type=int, default=0, help="pace bytes at this baud rate (0: no pacing)")
    p.set_defaults(func=_cmd_nullmodem)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("check", help="validate a config file and print every problem")
    c.add_argument("file")
    c.set_defaults(func=_cmd_config_check)

    p = sub.add_parser("diag", help="ask the running daemon (technician diagnostics, read-only)")
    p.add_argument("--config", default="/etc/station/station.toml", help="the daemon's config file")
    p.add_argument("--socket", help="the diagnostics socket (default: [diagnostics] socket from the config)")
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    dsub = p.add_subparsers(dest="diag_command", required=True)
    dsub.add_parser("status", help="CSMS connection, meter link, connectors")
    dsub.add_parser("meter", help="live readings and the MID data")
    dsub.add_parser("meter-test", help="guided check of the Modbus link")
    d = dsub.add_parser("transactions", help="recent transactions with their signed records")
    d.add_argument("--last", type=int, default=10)
    d = dsub.add_parser("transaction", help="one transaction by reference or CSMS transaction id")
    d.add_argument("id")
    d = dsub.add_parser("log", help="the OCPP frames in and out (secrets masked)")
    d.add_argument("--last", type=int, default=50, help="how many recent frames to show first (0..500)")
    d.add_argument("--follow", "-f", action="store_true", help="keep printing new frames until Ctrl-C")
    dsub.add_parser("security-log", help="the security events (OCPP security log), newest first")
    p.set_defaults(func=_cmd_diag)

    p = sub.add_parser("export", help="a transaction's signed records for the Transparenzsoftware")
    p.add_argument("--config", default="/etc/station/station.toml", help="the daemon's config file")
    p.add_argument("--socket", help="the diagnostics socket (default: [diagnostics] socket from the config)")
    p.add_argument("--transaction", required=True, help="transaction reference or CSMS transaction id")
    p.add_argument("--format", default="transparency-xml", choices=["transparency-xml"])
    p.add_argument("--out", help="file to write (default: standard output)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("verify", help="verify OCMF signed records")
    p.add_argument("inputs", nargs="+", help="an OCMF string, a file of them, or a Transparenzsoftware XML file")
    p.add_argument("--public-key", help="the meter's public key (hex/base64 DER, raw point)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
