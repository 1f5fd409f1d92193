"""The `station` command: run the daemon, the demo, the simulators, and the offline tools.

Owns argument parsing, the command list, exit codes and what happens on a closed pipe or Ctrl-C; every command's work
lives in its own module. It never lets a traceback reach a person for something as ordinary as `| head`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from station import __version__
from station.config import (
    METER_MODELS,
    Config,
    ConfigError,
    config_warnings,
    describe,
    load_config,
    secret_warnings,
)

# `station diag status` exit codes, like `systemctl is-active`: a script or a monitoring probe can use them.
EXIT_OK = 0
EXIT_FAILED = 1  # the command failed (e.g. the daemon could not be asked)
EXIT_USAGE = 2  # wrong arguments or an unusable config file
EXIT_CSMS_DOWN = 3  # status: the CSMS is not connected
EXIT_METER_DOWN = 4  # status: the meter link is down
EXIT_BOTH_DOWN = 5  # status: neither the CSMS nor the meter
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader went away (`| head`)
EXIT_INTERRUPTED = 130  # 128 + SIGINT

STATUS_CODES = f"""exit status:
  {EXIT_OK}  the CSMS is connected and the meter link is up
  {EXIT_FAILED}  the daemon could not be asked (not running? see the message)
  {EXIT_USAGE}  wrong arguments or an unusable config file
  {EXIT_CSMS_DOWN}  the CSMS is not connected (the meter link is up)
  {EXIT_METER_DOWN}  the meter link is down (the CSMS is connected)
  {EXIT_BOTH_DOWN}  neither the CSMS nor the meter
"""

LOG_LEVELS = ["debug", "info", "warning", "error"]


def _setup_logging(level: str = "info", fmt: str = "auto", config: Config | None = None) -> None:
    """With `config` (the daemon), also into its rotating log file ([logging])."""
    from station.config import log_file_path
    from station.logs import LogFile, configure

    log_file = None
    if config is not None and config.logging.write_file:
        log_file = LogFile(log_file_path(config), config.logging.max_bytes, config.logging.keep)
    configure(level, fmt, log_file)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the daemon and the demo


def _cmd_run(args: argparse.Namespace) -> int:
    import structlog

    from station.app import run_daemon

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    _setup_logging(args.log_level, args.log_format, config)
    for warning in secret_warnings(config):  # the daemon names a missing port or store directory itself
        structlog.get_logger("station.config").warning("config warning", problem=warning, file=args.config)
    return asyncio.run(run_daemon(config))


# ---- firmware update (issue 20): the release an operator uploads, and the unit's ExecStartPre


def _cmd_release(args: argparse.Namespace) -> int:
    from pathlib import Path

    from station.firmware import release

    if args.release_command == "preflight":
        from station.firmware.releases import Releases, preflight

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return EXIT_USAGE
        print(
            preflight(
                Releases(Path(config.firmware.releases)), Path(config.storage.path).parent, config.firmware.max_boots
            )
        )
        return 0
    key = Path(args.key).read_bytes()
    wheel = (
        release.build_wheel(Path(args.source), Path(args.out)) if args.release_command == "build" else Path(args.file)
    )
    version = release.release_version(wheel)
    sig = release.write_signature(wheel, key)
    print(f"release {version}: {wheel}\nsignature (UpdateFirmware firmware.signature): {sig}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from station.demo.session import demo_json, print_results, run_demo

    if args.ev and args.evses != 1:
        print(
            f"station demo: --ev tells one car's story on one EVSE; leave out --evses (got --evses {args.evses})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    _setup_logging("debug" if args.verbose else "error")

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    if args.ev:
        return _demo_ev(args, say)
    try:
        results = asyncio.run(
            run_demo(
                seconds=args.seconds,
                ocpp_version=args.ocpp,
                meter_model=args.meter_model,
                evses=args.evses,
                say=say,
            )
        )
    except (TimeoutError, ValueError) as exc:
        print(f"demo failed: {exc!r}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(demo_json(results)))
    else:
        print_results(results)
    return EXIT_OK if all(result.verified for result in results) else EXIT_FAILED


def _demo_ev(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    from station.demo.ev import ev_demo_json, run_ev_demo
    from station.demo.session import print_result

    try:
        result, story = asyncio.run(
            run_ev_demo(seconds=args.seconds, ocpp_version=args.ocpp, meter_model=args.meter_model, say=say)
        )
    except (TimeoutError, ValueError) as exc:
        print(f"demo failed: {exc!r}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(ev_demo_json(result, story)))
    else:
        print_result(result)
        print(f"the transaction ended with reason {story.stop_reason}")
    return EXIT_OK if result.verified else EXIT_FAILED


def _evse_count(text: str) -> int:
    from station.demo.session import check_evse_count

    try:
        return check_evse_count(int(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            str(exc) if text.strip().lstrip("-").isdigit() else f"not a whole number: {text!r}"
        ) from exc


# --------------------------------------------------------------------------- simulators


def _cmd_sim_meter(args: argparse.Namespace) -> int:
    from station.sim.meter import run_sim_meter

    _setup_logging(args.log_level)
    try:
        return asyncio.run(run_sim_meter(args))
    except KeyboardInterrupt:
        return EXIT_OK


def _cmd_nullmodem(args: argparse.Namespace) -> int:
    from station.meter.nullmodem import VirtualNullModem

    async def run() -> int:
        cable = await VirtualNullModem(baudrate=args.baudrate or None).start()
        print(json.dumps({"a": cable.path_a, "b": cable.path_b}), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await cable.stop()
        return EXIT_OK

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return EXIT_OK


def _cmd_sim_openevse(args: argparse.Namespace) -> int:
    from station.ev.sim.openevse import run_by_hand

    _setup_logging(args.log_level)
    try:
        asyncio.run(run_by_hand(args.port, baudrate=args.baudrate, has_lock=args.lock))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"sim openevse: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _cmd_sim_csms(args: argparse.Namespace) -> int:
    from station.sim import csms

    if args.csms_command is None:
        _setup_logging(args.log_level)
        try:
            return asyncio.run(csms.serve(args.port, control=args.control, versions=args.ocpp))
        except KeyboardInterrupt:
            return EXIT_OK
        except BrokenPipeError:
            raise  # main's quiet exit
        except OSError as exc:  # the port is taken, the control socket's directory is not ours
            print(f"sim csms: {exc}", file=sys.stderr)
            return EXIT_FAILED
    request = csms.request_from_args(args)
    try:
        answer = csms.ask(csms.control_path(args.port, args.control), request)
    except csms.ControlError as exc:
        print(f"sim csms: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(answer, indent=2, default=str))
    else:
        csms.print_answer(request, answer, sys.stdout)
    return EXIT_OK


def _cmd_sim_ev(args: argparse.Namespace) -> int:
    from station.sim import ev

    return ev.run(args)


# --------------------------------------------------------------------------- offline tools


def _cmd_config_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(f"{exc.source}: {len(exc.problems)} problem(s):")
        for problem in exc.problems:
            print(f"  - {problem}")
        return EXIT_FAILED
    try:
        warnings = config_warnings(config, user=args.user)
    except KeyError:
        print(f"config check: no user {args.user!r} on this machine", file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.file}: OK (station {config.station.id}, OCPP {config.csms.ocpp_version})")
    for line in describe(config):
        print(f"  {line}")
    if warnings:
        print(f"{len(warnings)} warning(s):")
    for warning in warnings:
        print(f"  WARNING: {warning}")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from station.verify_command import run_verify

    return int(run_verify(args.inputs, args.public_key, args.json, sys.stdout))


# --------------------------------------------------------------------------- asking the daemon


def _diag_socket(args: argparse.Namespace) -> str | None:
    """The diagnostics socket (--socket, --config, $STATION_CONFIG, the default config, the default socket); prints
    why when there is none."""
    from station.diag import client

    try:
        return client.find_socket(args.socket, args.config)
    except client.DiagError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return None


def _cmd_diag(args: argparse.Namespace) -> int:
    from station.diag import client

    socket_path = _diag_socket(args)
    if socket_path is None:
        return EXIT_USAGE
    command = args.diag_command
    request: dict[str, object] = {"command": command}
    if command in ("transactions", "log"):
        request["last"] = args.last
    if command == "transaction":
        request["id"] = args.id
    if command in ("meter", "meter-test"):
        request["evse"] = args.evse
    if command == "schedule" and args.evse is not None:
        request["evse"] = args.evse
    if command == "log":
        return _diag_log(socket_path, request, follow=args.follow, as_json=args.json)
    try:
        answer = client.ask(socket_path, request)
    except client.DiagError as exc:
        print(f"diag: {exc}", file=sys.stderr)
        return EXIT_FAILED
    answer.pop("ok", None)
    value = next(iter(answer.values()))
    if args.json:
        print(json.dumps(value, indent=2, default=str))
    elif command == "status":
        client.print_status(value, sys.stdout)
    elif command == "meter":
        client.print_meter(value, sys.stdout)
    elif command == "meter-test":
        client.print_meter_test(value, sys.stdout)
    elif command == "transactions":
        client.print_transactions(value, sys.stdout)
    elif command == "security-log":
        client.print_security_log(value, sys.stdout)
    elif command == "schedule":
        client.print_schedule(value, sys.stdout)
    else:
        client.print_transaction(value, sys.stdout)
    if command == "status":
        return _status_code(value)
    if command == "meter-test":
        return EXIT_OK if value["ok"] else EXIT_FAILED
    return EXIT_OK


def _status_code(status: dict[str, Any]) -> int:
    csms_up = bool(status["ocpp"]["connected"])
    meter_up = all(m["link"] == "up" for m in status.get("meters", [status["meter"]]))  # every EVSE's meter
    if csms_up and meter_up:
        return EXIT_OK
    if meter_up:
        return EXIT_CSMS_DOWN
    return EXIT_METER_DOWN if csms_up else EXIT_BOTH_DOWN


def _diag_log(socket_path: str, request: dict[str, object], *, follow: bool, as_json: bool) -> int:
    """`diag log` prints the recent frames and exits, like `journalctl -n`; with --follow it keeps streaming."""
    from station.diag import client

    def show(items: list[dict[str, Any]]) -> None:
        for item in items:
            print(json.dumps(item) if as_json else client.format_frame(item), flush=follow)

    try:
        if not follow:
            frames = client.ask(socket_path, request).get("log", [])
            show(frames)
            if not frames and not as_json:
                print("-- no OCPP frames yet --")
            return EXIT_OK
        request["follow"] = True
        for answer in client.follow(socket_path, request):
            show(answer.get("log", []) + ([answer["frame"]] if "frame" in answer else []))
    except client.DiagError as exc:
        print(f"diag: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from station.diag import client

    socket_path = _diag_socket(args)
    if socket_path is None:
        return EXIT_USAGE
    try:
        answer = client.ask(socket_path, {"command": "export", "id": args.transaction, "format": args.format})
    except client.DiagError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.out in (None, "-"):
        sys.stdout.write(answer["export"])
    else:
        Path(args.out).write_text(answer["export"], encoding="utf-8")
        print(f"wrote {args.out}: open it in the S.A.F.E. Transparenzsoftware to check the bill", file=sys.stderr)
    if not answer["verified"]:
        print("WARNING: the station could not verify this transaction's signed record(s)", file=sys.stderr)
    if answer.get("key_source") == "current meter":
        print(
            "NOTE: this transaction was stored before transactions remembered their meter: the export carries the key"
            " of the meter in place now, which is the signing key only if the meter has not been swapped since",
            file=sys.stderr,
        )
    return EXIT_OK


# --------------------------------------------------------------------------- the parser


class _Parser(argparse.ArgumentParser):
    """An error names the command it belongs to and says where the options are listed."""

    commands: dict[str, _Parser] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.add_help:  # a command, not a set of shared options
            # The deepest command parsed leaves its name in the namespace, for errors about arguments after it.
            self.set_defaults(_prog=self.prog)
            _Parser.commands[self.prog] = self

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n(`{self.prog} --help` lists the options)\n")


def _list_commands(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """`station`, `station diag`, `station sim`, ... alone: the commands, one line each."""

    def show(_: argparse.Namespace) -> int:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        print(f"usage: {parser.prog} COMMAND [OPTIONS]\n")
        if parser.description:
            print(parser.description + "\n")
        print("commands:")
        width = max(len(choice.dest) for choice in sub._choices_actions)
        for choice in sub._choices_actions:
            print(f"  {choice.dest:<{width}}  {choice.help}")
        print(f"\n`{parser.prog} COMMAND --help` shows a command's options.")
        return EXIT_OK

    return show


def _commands(parser: argparse.ArgumentParser, dest: str) -> argparse._SubParsersAction[_Parser]:
    sub = parser.add_subparsers(dest=dest, metavar="COMMAND", title="commands", parser_class=_Parser)
    parser.set_defaults(func=_list_commands(parser))
    return sub


def _daemon_options(*, top: bool, with_json: bool = True) -> _Parser:
    """--config, --socket, --json for `diag` and each of its commands. Given after the command they override what was
    given before it; not given there, they leave it (SUPPRESS), so both `diag --json status` and `diag status --json`
    work."""
    default: Any = (lambda value: value) if top else (lambda _: argparse.SUPPRESS)
    p = _Parser(add_help=False)
    p.add_argument(
        "--config",
        default=default(None),
        metavar="FILE",
        help="the daemon's config file (default: $STATION_CONFIG or /etc/station/station.toml; without one, "
        "the socket /run/station/diag.sock)",
    )
    p.add_argument(
        "--socket", default=default(None), metavar="PATH", help="the diagnostics socket (default: from the config)"
    )
    if with_json:
        p.add_argument("--json", action="store_true", default=default(False), help="print JSON for machines")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="station", description="EV charging station controller (OCPP 1.6J/2.0.1, Modbus RTU meter)")
    parser.add_argument("-V", "--version", action="version", version=f"station {__version__}")
    sub = _commands(parser, "command")

    p = sub.add_parser("run", help="run the daemon (until SIGTERM/SIGINT)", description="Run the daemon.")
    p.add_argument("--config", required=True, metavar="FILE", help="the TOML config file")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="least severe log lines shown")
    p.add_argument(
        "--log-format",
        default="auto",
        choices=["auto", "json", "console"],
        help="auto: console at a terminal, else JSON",
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("demo", help="signed charging sessions (one per EVSE) on the built-in simulators")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the story")
    p.add_argument("--ocpp", default="1.6", choices=["1.6", "2.0.1"], help="OCPP version to use")
    p.add_argument("--seconds", type=float, default=4.0, help="how long to charge")
    p.add_argument("--meter-model", default="smartme", choices=list(METER_MODELS), help="which simulated meter")
    p.add_argument(
        "--evses",
        type=_evse_count,
        default=1,
        metavar="N",
        help="EVSEs on one simulated bus, 1..4, each with its own meter: overlapping sessions (default 1)",
    )
    p.add_argument(
        "--ev",
        action="store_true",
        help="one session from the car's side (simulated car and charge controller): plug in, card, charge, "
        "pause, resume, unplug",
    )
    p.add_argument("--verbose", action="store_true", help="show the daemon's log lines")
    p.set_defaults(func=_cmd_demo)

    _add_diag(sub)

    p = sub.add_parser(
        "export",
        help="a transaction's signed records for the Transparenzsoftware",
        parents=[_daemon_options(top=True, with_json=False)],
    )
    p.add_argument("--transaction", required=True, metavar="ID", help="transaction reference or CSMS transaction id")
    p.add_argument("--format", default="transparency-xml", choices=["transparency-xml"], help="the file format")
    p.add_argument("--out", metavar="FILE", help="file to write (default: standard output)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("release", help="firmware releases: build and sign one, the unit's boot check")
    rsub = _commands(p, "release_command")
    r = rsub.add_parser("build", help="pip wheel of a source tree, signed: the file the CSMS's UpdateFirmware names")
    r.add_argument("--key", required=True, metavar="PEM", help="the manufacturer's firmware signing key")
    r.add_argument("--source", default=".", metavar="DIR", help="the source tree (default: .)")
    r.add_argument("--out", default="dist", metavar="DIR", help="where the wheel and its .sig go (default: dist)")
    r.set_defaults(func=_cmd_release)
    r = rsub.add_parser("sign", help="sign an existing release wheel (writes FILE.sig, base64)")
    r.add_argument("file", help="the station wheel")
    r.add_argument("--key", required=True, metavar="PEM", help="the manufacturer's firmware signing key")
    r.set_defaults(func=_cmd_release)
    r = rsub.add_parser("preflight", help="ExecStartPre: count a new release's starts, roll back after max_boots")
    r.add_argument("--config", required=True, metavar="FILE", help="the TOML config file")
    r.set_defaults(func=_cmd_release)

    p = sub.add_parser("config", help="configuration tools (config check FILE)")
    csub = _commands(p, "config_command")
    c = csub.add_parser(
        "check",
        help="validate a config file: every problem (exit 1) and warning (exit 0)",
        description="Validate a config file and print every problem (exit 1) and every warning (exit 0): missing "
        "serial port, directories the daemon cannot write, secrets readable by others.",
    )
    c.add_argument("file", help="the TOML config file")
    c.add_argument(
        "--user",
        metavar="NAME",
        help="check file access as this user would have it under the unit (its groups and dialout), e.g. the service "
        "user `station` (default: yourself)",
    )
    c.set_defaults(func=_cmd_config_check)

    p = sub.add_parser("verify", help="verify OCMF signed records (exit 0 valid, 1 invalid, 2 unusable input)")
    p.add_argument("inputs", nargs="+", help="an OCMF string, a file of them, or a Transparenzsoftware XML file")
    p.add_argument("--public-key", help="the meter's public key (hex/base64 DER, raw point)")
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser(
        "sim", help="simulators for trying the daemon by hand: sim csms, sim meter, sim ev, sim nullmodem, sim openevse"
    )
    simsub = _commands(p, "sim_command")
    _add_sim_csms(simsub)
    _add_sim_ev(simsub)
    _add_sim_meter(simsub, "meter", help="a simulated meter (Modbus RTU server), on its own virtual cable or a port")
    _add_nullmodem(simsub, "nullmodem")
    _add_sim_openevse(simsub)
    # The names from before `station sim` keep working.
    _add_sim_meter(sub, "meter-sim", help="the same as `station sim meter`")
    _add_nullmodem(sub, "nullmodem", help="the same as `station sim nullmodem`")
    return parser


def _add_diag(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "diag",
        help="ask the running daemon (technician diagnostics, read-only)",
        description="Ask the running daemon over its diagnostics socket (read-only).",
        parents=[_daemon_options(top=True)],
    )
    dsub = _commands(p, "diag_command")
    common = [_daemon_options(top=False)]

    def command(name: str, help: str, **kwargs: Any) -> _Parser:
        d = dsub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", parents=common, **kwargs)
        d.set_defaults(func=_cmd_diag)
        return d

    command(
        "status",
        "CSMS connection, meter link, connectors; the exit status says what is down",
        epilog=STATUS_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name, text in (
        ("meter", "live readings and the MID data of one EVSE's meter"),
        ("meter-test", "guided check of one EVSE's meter on its Modbus line (exit 1 when it fails)"),
    ):
        d = command(name, text)
        d.add_argument("--evse", type=int, default=1, metavar="N", help="the EVSE whose meter (default 1)")
    d = command("transactions", "recent transactions with their signed records, newest first")
    d.add_argument("--last", type=int, default=10, metavar="N", help="how many (1..1000, default 10)")
    d = command("transaction", "one transaction by reference (the page's 8 digits will do) or CSMS transaction id")
    d.add_argument("id", help="our reference, a unique start of it, or the CSMS's transaction id")
    d = command("log", "the recent OCPP frames in and out (secrets masked); --follow keeps printing")
    d.add_argument("--last", type=int, default=50, metavar="N", help="how many recent frames to show (0..500)")
    d.add_argument("--follow", "-f", action="store_true", help="then keep printing new frames until Ctrl-C")
    command("security-log", "the security events (OCPP security log), newest first")
    d = command("schedule", "smart charging: each EVSE's limit now, its charging profiles and the next 24 h")
    d.add_argument("--evse", type=int, default=None, metavar="N", help="only this EVSE (0: the station; default all)")


def _add_sim_meter(sub: argparse._SubParsersAction[_Parser], name: str, help: str) -> None:
    p = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
    p.add_argument("--model", choices=list(METER_MODELS), help="which meter to simulate (default smartme)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--port", help="serve on this serial device (e.g. one end of `station sim nullmodem`)")
    where.add_argument(
        "--link",
        metavar="PATH",
        help="make a virtual cable and a symlink PATH to the daemon's end, for `[meter] port = PATH` "
        "(default without --port: STATE_DIR/meter-tty)",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where meter.json (memory), ledger.jsonl and the link go when not given (default: "
        "$TMPDIR/station-dev; created)",
    )
    p.add_argument("--state", metavar="FILE", help="file of the meter's non-volatile memory (created if missing)")
    p.add_argument("--ledger", metavar="FILE", help="JSON-lines file: every record the meter signs is appended")
    p.add_argument("--baudrate", type=int, default=9600, help="serial speed in bit/s")
    p.add_argument("--device-id", type=int, help="the meter's Modbus address (default 1)")
    p.add_argument(
        "--meter",
        action="append",
        metavar="MODEL:ID[:KEY=VALUE,...]",
        help="one of several meters on the line (repeat it; at most 32, distinct ids 1..247), instead of --model, "
        "--device-id, --state and --ledger; keys: state=FILE, ledger=FILE, power_w=W, signing_time=S; "
        "e.g. --meter smartme:1 --meter iskra-wm3m4c:33:ledger=/tmp/l33.jsonl",
    )
    p.add_argument("--power-w", type=float, default=11000.0, help="simulated charging power")
    p.add_argument("--signing-time", type=float, default=0.5, help="seconds the meter takes to sign")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="least severe log lines shown")
    p.set_defaults(func=_cmd_sim_meter)


def _add_sim_ev(sub: argparse._SubParsersAction[_Parser]) -> None:
    def socket_option(top: bool) -> _Parser:
        o = _Parser(add_help=False)
        o.add_argument(
            "--socket",
            metavar="PATH",
            default=None if top else argparse.SUPPRESS,
            help="the simulated charge controller's control socket (its `control_socket`)",
        )
        o.add_argument(
            "--json", action="store_true", default=False if top else argparse.SUPPRESS, help="print the answer as JSON"
        )
        return o

    p = sub.add_parser(
        "ev",
        help='drive a running station\'s simulated car, faults and card reader (driver = "simulated")',
        description='Drive the simulated charge controller of a running station\'s EVSE (`driver = "simulated"`, '
        "`control_socket = PATH`): plug the car in, make it ask for power or pause, present a card, inject faults. "
        "Exit status: 0 done, 1 refused by the simulation, 2 wrong arguments or nothing at the socket.",
        parents=[socket_option(True)],
    )
    esub = _commands(p, "ev_command")
    common = [socket_option(False)]

    def command(name: str, help: str) -> _Parser:
        c = esub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", parents=common)
        c.set_defaults(func=_cmd_sim_ev)
        return c

    command("plug", "plug the car in (pilot B)")
    command("unplug", "unplug the car (pilot A)")
    command("ready", "the car asks for power (pilot C)")
    command("suspend", "the car pauses (back to pilot B)")
    c = command("card", "present a card at this EVSE's reader")
    c.add_argument("uid", help="the card's UID in hex (4, 7 or 10 bytes), e.g. 04A1B2C3")
    c = command("fault", "make the controller report a fault")
    c.add_argument(
        "name",
        help="rcd, diode, overcurrent, overtemperature, no_ground, relay_welded, lock_failure, controller_silent",
    )
    c.add_argument("--detail", default="", help="text the fault carries")
    c = command("clear", "clear a fault, or all of them")
    c.add_argument("name", nargs="?", default="", help="the fault to clear (default: every active one)")
    command("state", "pilot, relay, lock, current limit, power and faults")


def _add_nullmodem(sub: argparse._SubParsersAction[_Parser], name: str, help: str | None = None) -> None:
    text = help or "a virtual serial cable (two ptys back to back); prints its ends"
    p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
    p.add_argument("--baudrate", type=int, default=0, help="pace bytes at this baud rate (0: no pacing)")
    p.set_defaults(func=_cmd_nullmodem)


def _add_sim_openevse(sub: argparse._SubParsersAction[_Parser]) -> None:
    text = "a simulated OpenEVSE charge controller (RAPI) with a car, on a serial port; commands on stdin"
    p = sub.add_parser("openevse", help=text, description=text[0].upper() + text[1:] + ".")
    p.add_argument("--port", required=True, help="serve on this serial device (one end of `station sim nullmodem`)")
    p.add_argument("--baudrate", type=int, default=115200, help="the line's baud rate (default 115200)")
    p.add_argument("--lock", action="store_true", help="with a connector lock (the firmware's Mennekes lock)")
    p.add_argument("--log-level", default="warning", choices=LOG_LEVELS, help="least severe log lines shown")
    p.set_defaults(func=_cmd_sim_openevse)


def _tcp_port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port (1..65535)")
    return port


def _add_sim_csms(sub: argparse._SubParsersAction[_Parser]) -> None:
    from station.sim import commands as csms  # the commands as data, not the CSMS simulator (every command builds this)

    def port_options(top: bool) -> _Parser:
        default: Any = (lambda value: value) if top else (lambda _: argparse.SUPPRESS)
        o = _Parser(add_help=False)
        o.add_argument(
            "--port",
            type=_tcp_port,
            default=default(csms.DEFAULT_PORT),
            help=f"the CSMS's WebSocket port on 127.0.0.1 (default {csms.DEFAULT_PORT})",
        )
        o.add_argument(
            "--control",
            metavar="PATH",
            default=default(None),
            help="the control socket of the running CSMS (default: one per port under $TMPDIR)",
        )
        return o

    p = sub.add_parser(
        "csms",
        help="a local CSMS on 127.0.0.1 to drive by hand (prints what the station sends)",
        description="Without COMMAND: run a local CSMS (OCPP 1.6J and 2.0.1) on 127.0.0.1 that prints every message "
        "the station sends; type commands at its prompt, or send them from another terminal with "
        "`station sim csms COMMAND`.",
        parents=[port_options(True)],
    )
    p.add_argument(
        "--ocpp", default="both", choices=["1.6", "2.0.1", "both"], help="OCPP versions to accept (both: either)"
    )
    p.add_argument("--log-level", default="warning", choices=LOG_LEVELS, help="least severe log lines shown")
    p.set_defaults(func=_cmd_sim_csms, csms_command=None, json=False)
    ssub = p.add_subparsers(dest="csms_command", metavar="[COMMAND]", title="commands", parser_class=_Parser)
    for name, help, arguments in csms.COMMANDS:
        c = ssub.add_parser(
            name, help=help, description=help[0].upper() + help[1:] + ".", parents=[port_options(False)]
        )
        c.add_argument("--json", action="store_true", help="print the answer as JSON")
        for flags, options in arguments:
            c.add_argument(*flags, **options)
        c.set_defaults(func=_cmd_sim_csms)


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:
            _Parser.commands.get(args._prog, parser).error(f"unrecognized arguments: {' '.join(extra)}")
        code = int(args.func(args))
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (`station diag transaction ID | head -2`): stop quietly, as git and grep do. Python
        # would flush stdout once more at exit and print a traceback; point it at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
