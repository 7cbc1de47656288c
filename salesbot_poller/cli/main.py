"""Command line: `salesbot-poller [--config PATH] [--log-level L]
{once,run,check,status,demo,backfill,auth,retry,usage,fleet,forget,eval,export,report,profiles}`.

Exit codes: 0 success; 1 `check` found a service not working, `backfill` was not confirmed
or the service is running, `forget` was not confirmed (or a call was being processed, or a
Telegram deletion failed for a reason worth another try), `demo` did not deliver, `retry` was given a call id that is
unknown or not failed, `fleet status` found an instance failing its cycles, a `fleet`
command (or `usage`) could not read an instance, `eval` could not analyse a call, `report` was not
sent; 2 invalid configuration or arguments
(one line per problem on stderr); 3 a fatal service error (credentials, account, chat) or
a database error, one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import UTC, datetime

import peewee

from salesbot_poller import __version__
from salesbot_poller.cli import commands
from salesbot_poller.config import Config, config_path, load_config, safe_url
from salesbot_poller.errors import ConfigError, FatalError
from salesbot_poller.logs import add_secrets, redact, set_level, setup_logging, stderr_is_journal
from salesbot_poller.store import Store
from salesbot_poller.store.postgres import one_line

# The service clients (openai alone takes over a second to import) are imported by the
# commands that use them, inside their functions: `--help`, `status` and `retry` start fast.

EXIT_OK, EXIT_CHECK_FAILED, EXIT_CONFIG, EXIT_FATAL = 0, 1, 2, 3

log = logging.getLogger("salesbot_poller")


def utc_now() -> datetime:
    return datetime.now(UTC)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="salesbot-poller",
        description="Poll amoCRM calls, transcribe and score them, post the results to Telegram.",
    )
    parser.add_argument("--config", help="config file (default: $SALESBOT_CONFIG or /etc/salesbot/config.toml)")
    parser.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="overrides poller.log_level (INFO)"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    once = commands.add_parser("once", help="one poll cycle, then process every due call, then exit")
    run = commands.add_parser("run", help="the daemon: a cycle every poller.interval_seconds until SIGTERM")
    for sub in (once, run):
        sub.add_argument(
            "--dry-run",
            action="store_true",
            help="the whole pipeline, but print messages and amoCRM writes instead of sending; mark nothing notified",
        )
    commands.add_parser("check", help="validate the config and check amoCRM, OpenAI and Telegram")
    commands.add_parser("status", help="calls per stage, last cycle, cursor, last errors")
    commands.add_parser(
        "profiles", help="the amoCRM account's pipelines, statuses, user groups and users, with ids, for [[profiles]]"
    )
    demo = commands.add_parser("demo", help="one real cycle against built-in sandbox servers: no config, no network")
    demo.add_argument("--weekly", action="store_true", help="the weekly team report on eight weeks of demo calls")
    demo.add_argument("--chart", metavar="FILE", help="with --weekly: also write the chart (PNG) to FILE")
    backfill_cmd = commands.add_parser("backfill", help="count, confirm, then process the calls of a past window")
    backfill_cmd.add_argument("--since", required=True, help="first day (2026-11-01, local time) or date and time")
    backfill_cmd.add_argument("--until", help="last day, included (default: now)")
    backfill_cmd.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    backfill_cmd.add_argument(
        "--record-only", action="store_true", help="only record the calls: the running service processes them"
    )
    auth = commands.add_parser("auth", help="exchange an amoCRM authorization code for OAuth tokens (kept in the DB)")
    auth.add_argument("--code", required=True, help="the authorization code from the integration's settings in amoCRM")
    retry = commands.add_parser(
        "retry", help="put failed or quarantined calls back (CALL_ID ..., or --failed for all), or set-aside events"
    )
    retry.add_argument("call_ids", nargs="*", type=int, metavar="CALL_ID")
    retry.add_argument("--failed", action="store_true", help="every failed or quarantined call")
    retry.add_argument(
        "--event", action="append", default=[], metavar="EVENT_ID", help="a set-aside event, read again (repeatable)"
    )
    forget_cmd = commands.add_parser(
        "forget", help="remove every call's personal data for one phone number (asks first)"
    )
    forget_cmd.add_argument("--phone", required=True, metavar="NUMBER", help="compared by its last 10 digits")
    forget_cmd.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    eval_cmd = commands.add_parser(
        "eval", help="run the configured analysis on transcripts with expected verdicts (eval/) and compare"
    )
    eval_cmd.add_argument("directory", metavar="DIR", help="NAME.txt transcripts, each with NAME.expected.toml")
    export_cmd = commands.add_parser(
        "export", help="the analysed calls of a period, one row each, as CSV (Excel-ready) or JSON Lines"
    )
    export_cmd.add_argument("--since", required=True, metavar="DAY", help="first day, e.g. 2026-11-01 (account's zone)")
    export_cmd.add_argument("--until", metavar="DAY", help="last day, included (default: today)")
    export_cmd.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="(default: %(default)s)")
    export_cmd.add_argument("--output", metavar="FILE", help="write there instead of stdout")
    report_cmd = commands.add_parser("report", help="the weekly team report of a past week: send it, or print it")
    report_cmd.add_argument("--week", required=True, help="any day of that week, e.g. 2026-11-23 (its Monday)")
    report_cmd.add_argument("--dry-run", action="store_true", help="print the report instead of sending it")
    report_cmd.add_argument("--chart", metavar="FILE", help="also write the chart (PNG) to FILE")
    usage_cmd = commands.add_parser("usage", help="a UTC month: audio minutes, tokens, estimated cost, calls analysed")
    fleet = commands.add_parser("fleet", help="every instance under --root: `fleet status`, `fleet usage` (read only)")
    fleet_commands = fleet.add_subparsers(dest="fleet_command", required=True, metavar="FLEET_COMMAND")
    fleet_status = fleet_commands.add_parser("status", help="one line per instance: last cycle, backlog, cost, pauses")
    fleet_usage = fleet_commands.add_parser("usage", help="one UTC month per instance, for re-billing")
    for sub in (usage_cmd, fleet_usage):
        sub.add_argument("--month", required=True, help="the UTC month, e.g. 2026-11")
        sub.add_argument("--csv", action="store_true", help="CSV (a header row, then the rows) instead of a table")
    for sub in (fleet_status, fleet_usage):
        sub.add_argument("--root", default="/etc/salesbot", help="one NAME/config.toml per instance (%(default)s)")
    return parser


def _err(message: str) -> None:
    # Under systemd these are errors too: `journalctl -p err` must show why the service stopped.
    priority = "<3>" if stderr_is_journal(os.environ, sys.stderr) else ""
    print(f"{priority}salesbot-poller: {message}", file=sys.stderr)


def _load(path_arg: str | None, require_secrets: bool) -> Config:
    path = config_path(path_arg, os.environ)
    config = load_config(path, os.environ, require_secrets=require_secrets)
    add_secrets(config.secrets())
    return config


PRIVATE_UMASK = 0o077


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (see the module docstring)."""
    # Everything this process creates is its own alone, whatever umask it inherited: the
    # database and its -wal/-shm, recordings and their .part files, the lock, temporary work
    # directories (0600 files, 0700 directories). The store and the composition root also fix
    # the modes of such files left by older versions.
    os.umask(PRIVATE_UMASK)
    args = _parser().parse_args(argv)
    setup_logging(args.log_level or "INFO")
    if args.command == "demo":
        if args.weekly:
            from pathlib import Path

            from salesbot_poller.cli.demo_weekly import run_weekly_demo

            return run_weekly_demo(print, Path(args.chart) if args.chart else None)
        from salesbot_poller.cli.demo import run_demo

        return run_demo(print)
    if args.command in ("fleet", "usage"):
        return _read_only(args)
    secrets: list[str] = []
    try:
        if args.command == "retry" and not (args.call_ids or args.failed or args.event):
            _err("retry: give CALL_ID(s), --failed or --event EVENT_ID")
            return EXIT_CONFIG
        no_secrets = ("status", "auth", "retry", "forget", "eval", "export", "profiles")
        config = _load(args.config, require_secrets=args.command not in no_secrets)
        if args.log_level is None:
            set_level(config.poller.log_level)
        secrets = config.secrets()
        if args.command == "auth":
            return _auth(config, args.code, args.config or "")
        if args.command == "backfill":
            return _backfill(args, config)
        if args.command == "forget":
            return _forget(args, config)
        if args.command == "eval":
            return _eval(args.directory, config)
        if args.command == "export":
            return _export(args, config)
        if args.command == "report":
            return _report(args, config)
        return _dispatch(args.command, config, args)
    except ConfigError as exc:
        for problem in exc.problems:
            _err(f"config: {problem}")
        return EXIT_CONFIG
    except FatalError as exc:
        _err(redact(str(exc), secrets))
        return EXIT_FATAL
    except peewee.PeeweeException as exc:
        _err(f"database error: {redact(one_line(exc), secrets)} (check storage.database)")
        return EXIT_FATAL


def _read_only(args: argparse.Namespace) -> int:
    """`fleet status`, `fleet usage` and `usage`: they read databases, never write one, and
    take no lock (see `cli.fleet`)."""
    from pathlib import Path

    from salesbot_poller.cli import fleet
    from salesbot_poller.pipeline.usage import month_bounds

    if getattr(args, "month", None) is not None:
        try:
            month_bounds(args.month)
        except ValueError as exc:
            _err(f"--month: {exc}")
            return EXIT_CONFIG
    now = int(utc_now().timestamp())
    if args.command == "fleet":
        root = Path(args.root)
        instances = fleet.find_instances(root)
        if not instances:
            _err(f"fleet: no instances under {root} (each is {root}/NAME/{fleet.CONFIG_NAME})")
            return EXIT_CONFIG
        if args.fleet_command == "status":
            ok = fleet.fleet_status(instances, now, print)
        else:
            ok = fleet.fleet_usage(instances, args.month, args.csv, print, _err)
        return EXIT_OK if ok else EXIT_CHECK_FAILED
    secrets: list[str] = []
    try:
        config = _load(args.config, require_secrets=False)
        secrets = config.secrets()
        fleet.instance_usage(config, "the service", args.month, args.csv, lambda line: print(redact(line, secrets)))
    except ConfigError as exc:
        for problem in exc.problems:
            _err(f"config: {problem}")
        return EXIT_CONFIG
    except fleet.Unreadable as exc:
        _err(redact(str(exc), secrets))
        return EXIT_CHECK_FAILED
    return EXIT_OK


def _auth(config: Config, code: str, config_arg: str) -> int:
    from salesbot_poller.cli.check import auth

    store = Store.open(config.storage.database, int(utc_now().timestamp()))
    try:
        auth(config, store, utc_now, code, config_arg, print)
    finally:
        store.close()
    return EXIT_OK


def _dispatch(command: str, config: Config, args: argparse.Namespace | None = None) -> int:
    store = Store.open(config.storage.database, int(utc_now().timestamp()))
    secrets = config.secrets()

    def out(line: str) -> None:
        # Stored errors and service answers are printed: redacted like the logs, to be sure.
        print(redact(line, secrets))

    try:
        if command == "status":
            commands.status(store, out, config)
            return EXIT_OK
        if command == "retry" and args is not None:
            now = int(utc_now().timestamp())
            requeued = True
            if args.call_ids or args.failed:
                requeued = commands.retry(store, args.call_ids, args.failed, now, out)
            readmitted = commands.retry_events(store, args.event, now, out)
            return EXIT_OK if requeued and readmitted else EXIT_CHECK_FAILED
        if command == "profiles":
            from salesbot_poller.app import build_amo
            from salesbot_poller.cli.profiles import directory_lines

            for line in directory_lines(build_amo(config, store, utc_now).directory()):
                out(line)
            return EXIT_OK
        if command == "check":
            from salesbot_poller.cli.check import check

            out(f"config: ok ({config.amocrm.base_url}, database {safe_url(config.storage.database)})")
            config_file = config_path(getattr(args, "config", None), os.environ)
            return EXIT_OK if check(config, store, utc_now, out, config_file) else EXIT_CHECK_FAILED
        from salesbot_poller.app import build_app
        from salesbot_poller.cli.daemon import run_daemon
        from salesbot_poller.lanes import CycleFailed, run_once
        from salesbot_poller.pipeline.recovery import exclusive

        dry_run = bool(getattr(args, "dry_run", False))
        app = build_app(config, utc_now, store, dry_run=out if dry_run else None)
        with exclusive(config.storage.database):  # one process works the calls at a time
            if command == "once":
                try:
                    run_once(app, utc_now())
                except CycleFailed as exc:  # logged with its traceback; `status` shows it
                    _err(f"cycle failed: {redact(str(exc), secrets)} (`salesbot-poller status` shows it)")
                    return EXIT_CHECK_FAILED
                return EXIT_OK
            return run_daemon(app, utc_now)
    finally:
        store.close()


def _eval(directory: str, config: Config) -> int:
    """`eval DIR`: no database, no amoCRM, no Telegram: the chat model only."""
    from pathlib import Path

    from salesbot_poller.app import build_analyzer, build_openai
    from salesbot_poller.cli.evaluate import EvalError, evaluate, load_cases, report

    secrets = config.secrets()
    try:
        cases = load_cases(Path(directory))
    except EvalError as exc:
        _err(f"eval: {exc}")
        return EXIT_CONFIG
    analyzer = build_analyzer(config, build_openai(config, config.openai.chat))
    prompt = config.analysis.prompt_file or "built-in"
    header = (
        f"eval: {len(cases)} calls in {directory}, model {config.openai.analysis_model},"
        f" rubric of {len(config.analysis.rubric)} items, prompt {prompt}"
    )
    if not (config.openai.input_token_price_per_million_usd or config.openai.output_token_price_per_million_usd):
        header += "\n(cost is 0: set openai.input/output_token_price_per_million_usd to see it)"
    outcomes = evaluate(analyzer, cases, config.openai)
    report(outcomes, config.analysis.rubric, header, lambda line: print(redact(line, secrets), flush=True))
    return EXIT_CHECK_FAILED if any(o.analysis is None for o in outcomes) else EXIT_OK


def _backfill(args: argparse.Namespace, config: Config) -> int:
    """`backfill`: dates are local (the TZ of the process, as in the messages)."""
    from salesbot_poller.app import build_app
    from salesbot_poller.cli.backfill import Estimate, Outcome, backfill, parse_moment
    from salesbot_poller.pipeline.recovery import exclusive

    local = datetime.now().astimezone().tzinfo or UTC
    try:
        since = parse_moment(args.since, local)
        until = parse_moment(args.until, local, end_of_day=True) if args.until else utc_now()
    except ValueError as exc:
        _err(f"backfill: {exc}")
        return EXIT_CONFIG
    secrets = config.secrets()

    def out(line: str) -> None:
        print(redact(line, secrets), flush=True)

    def confirm(estimate: Estimate) -> bool:
        if args.yes:
            return True
        if not sys.stdin.isatty():
            out(f"backfill: not confirmed: no terminal to ask; pass --yes to process {estimate.new} calls")
            return False
        answer = input(f"Process {estimate.new} calls now? [y/N] ").strip().lower()
        return answer in ("y", "yes", "д", "да")

    store = Store.open(config.storage.database, int(utc_now().timestamp()))
    try:
        app = build_app(config, utc_now, store)
        # The lock `once`/`run` hold: a backfill that processes calls never works beside them
        # (--record-only only adds calls, which the running service then processes).
        with nullcontext() if args.record_only else exclusive(config.storage.database):
            outcome = backfill(
                app,
                since,
                until,
                utc_now(),
                out,
                confirm,
                record_only=args.record_only,
                price_per_minute=config.openai.audio_price_per_minute_usd,
            )
    except ValueError as exc:
        _err(f"backfill: {exc}")
        return EXIT_CONFIG
    finally:
        store.close()
    return EXIT_OK if outcome in (Outcome.DONE, Outcome.NOTHING) else EXIT_CHECK_FAILED


def _forget(args: argparse.Namespace, config: Config) -> int:
    """`forget --phone NUMBER`: see `cli.forget`. Only Telegram is contacted, and only with
    `telegram.delete_on_forget`."""
    from salesbot_poller.cli.forget import MessageEraser, Outcome, forget

    eraser: MessageEraser | None = None
    if config.telegram.delete_on_forget:
        if not config.telegram.bot_token.get_secret_value():
            raise ConfigError(["telegram.bot_token: required to delete messages (telegram.delete_on_forget = true)"])
        from salesbot_poller.app import build_notifier

        eraser = build_notifier(config)
    secrets = config.secrets()

    def out(line: str) -> None:
        print(redact(line, secrets), flush=True)

    def confirm(question: str) -> bool:
        if args.yes:
            return True
        if not sys.stdin.isatty():
            out("forget: not confirmed: no terminal to ask; pass --yes to remove it")
            return False
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes", "д", "да")

    store = Store.open(config.storage.database, int(utc_now().timestamp()))
    try:
        outcome = forget(
            store,
            args.phone,
            int(utc_now().timestamp()),
            out,
            confirm,
            audio_dir=config.storage.audio_dir,
            default_chat=config.telegram.chat_id,
            eraser=eraser,
        )
    except ValueError as exc:
        _err(f"forget: {exc}")
        return EXIT_CONFIG
    finally:
        store.close()
    return EXIT_OK if outcome in (Outcome.DONE, Outcome.NOTHING) else EXIT_CHECK_FAILED


def _export(args: argparse.Namespace, config: Config) -> int:
    """`export`: see `cli.export`. Days are in `amocrm.timezone` (else the server's zone)."""
    import io
    from pathlib import Path
    from zoneinfo import ZoneInfo

    from salesbot_poller.cli.export import export, parse_day

    tz = ZoneInfo(config.amocrm.timezone) if config.amocrm.timezone else datetime.now().astimezone().tzinfo or UTC
    try:
        since = parse_day(args.since, "--since")
        until = parse_day(args.until, "--until") if args.until else utc_now().astimezone(tz).date()
        if until < since:
            raise ValueError(f"--until: {until} is before --since {since}")
    except ValueError as exc:
        _err(f"export: {exc}")
        return EXIT_CONFIG
    store = Store.open(config.storage.database, int(utc_now().timestamp()))
    try:
        if args.output:
            target = Path(args.output)
            partial = target.with_name(target.name + ".part")  # a failed export leaves no half file
            with partial.open("w", encoding="utf-8", newline="") as out:
                written = export(store, since, until, tz, args.format, out)
            partial.replace(target)
        else:
            out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="", write_through=False)
            try:
                written = export(store, since, until, tz, args.format, out)
            finally:
                out.detach()  # stdout stays open for whoever prints next
    except OSError as exc:
        _err(f"export: --output: cannot write {args.output}: {exc.strerror}")
        return EXIT_CONFIG
    finally:
        store.close()
    print(f"export: {written} call(s) from {since} to {until}", file=sys.stderr)
    return EXIT_OK


def _report(args: argparse.Namespace, config: Config) -> int:
    """`report --week DATE`: see `cli.report`; the week is read in `amocrm.timezone`."""
    from pathlib import Path

    from salesbot_poller.app import account_zone, build_app
    from salesbot_poller.cli.report import parse_week, report
    from salesbot_poller.domain import local_time

    now = int(utc_now().timestamp())
    try:
        monday = parse_week(args.week, local_time(now, account_zone(config)).date())
    except ValueError as exc:
        _err(f"report --week: {exc}")
        return EXIT_CONFIG
    secrets = config.secrets()

    def out(line: str) -> None:
        print(redact(line, secrets), flush=True)

    store = Store.open(config.storage.database, now)
    try:
        app = build_app(config, utc_now, store, dry_run=out if args.dry_run else None)
        sent = report(app, monday, now, out, Path(args.chart) if args.chart else None)
    finally:
        store.close()
    return EXIT_OK if sent else EXIT_CHECK_FAILED
