"""Command line: `salesbot-poller [--config PATH] [--log-level L]
{once,run,check,status,demo,backfill,auth,retry,usage,fleet,forget,eval,export,report,profiles,
trackers}`.

This module builds the parser and dispatches: each command is a module of `salesbot_poller.cli`
with `run(args, config) -> int` (`COMMANDS`). Exit codes: see `cli.common`.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import peewee

from salesbot_poller import __version__
from salesbot_poller.cli.common import EXIT_CONFIG, EXIT_FATAL, err, load
from salesbot_poller.config import Config
from salesbot_poller.errors import ConfigError, FatalError
from salesbot_poller.logs import redact_known, setup_logging
from salesbot_poller.store.postgres import one_line

# A command's module is imported only when it runs: the service clients (openai alone takes
# over a second to import) are imported by the commands that use them, so `--help`, `status`
# and `retry` start fast.

Handler = Callable[[argparse.Namespace, Config | None], int]


@dataclass(frozen=True)
class Command:
    module: str  # salesbot_poller.cli.<module>: its `run(args, config)` does the command
    config: bool = True  # loaded before `run` (False: `run` gets None and loads it, if at all, itself)
    secrets: bool = True  # the config must hold the service credentials


COMMANDS: dict[str, Command] = {
    "once": Command("daemon"),
    "run": Command("daemon"),
    "check": Command("check"),
    "status": Command("commands", secrets=False),
    "retry": Command("commands", config=False, secrets=False),  # its arguments are checked first
    "profiles": Command("profiles", secrets=False),
    "demo": Command("demo", config=False, secrets=False),  # its own sandbox config
    "backfill": Command("backfill"),
    "auth": Command("check", secrets=False),
    "forget": Command("forget", secrets=False),
    "eval": Command("evaluate", config=False, secrets=False),  # the trackers' set needs none
    "export": Command("export", secrets=False),
    "report": Command("report"),
    "trackers": Command("trackers", secrets=False),
    "usage": Command("fleet", config=False, secrets=False),  # read only: its --month is checked first
    "fleet": Command("fleet", config=False, secrets=False),  # read only: one config per instance
}

PRIVATE_UMASK = 0o077


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
    check_cmd = commands.add_parser("check", help="validate the config and check amoCRM, OpenAI and Telegram")
    check_cmd.add_argument(
        "--show-config",
        action="store_true",
        help="print the merged config, secrets hidden, each value with its source; check nothing",
    )
    commands.add_parser("status", help="calls per stage, last cycle, cursor, last errors")
    commands.add_parser(
        "profiles", help="the amoCRM account's pipelines, statuses, user groups and users, with ids, for [[profiles]]"
    )
    demo = commands.add_parser("demo", help="one real cycle against built-in sandbox servers: no config, no network")
    demo.add_argument("--weekly", action="store_true", help="the weekly team report on eight weeks of demo calls")
    demo.add_argument("--chart", metavar="FILE", help="with --weekly: also write the chart (PNG) to FILE")
    demo.add_argument(
        "--serve",
        action="store_true",
        help="the sandboxes and the daemon until Ctrl-C: type bot commands here, run any command in another terminal",
    )
    demo.add_argument("--dir", default="salesbot-demo", help="with --serve: its config and database (%(default)s)")
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
    forget_cmd.add_argument(
        "--phone", required=True, metavar="NUMBER", help="in any form: 8 (916) 123-45-67 finds 79161234567"
    )
    forget_cmd.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    eval_cmd = commands.add_parser(
        "eval",
        help="run the configured analysis on transcripts with expected verdicts (eval/) and compare;"
        " or the trackers on labelled sentences (eval/trackers, no config needed)",
    )
    eval_cmd.add_argument(
        "directory",
        metavar="DIR",
        nargs="?",
        help="NAME.txt transcripts, each with NAME.expected.toml; or trackers.toml",
    )
    eval_cmd.add_argument(
        "--corrections",
        metavar="DIR",
        help="instead: write the calls people corrected in Telegram to DIR as an eval set (needs --since)",
    )
    eval_cmd.add_argument("--since", metavar="DAY", help="with --corrections: corrections made from this day on")
    eval_cmd.add_argument(
        "--yes", action="store_true", help="with --corrections: write even when analysis.redact leaves numbers in"
    )
    export_cmd = commands.add_parser(
        "export", help="the analysed calls of a period, one row each, as CSV (Excel-ready) or JSON Lines"
    )
    export_cmd.add_argument("--since", required=True, metavar="DAY", help="first day, e.g. 2026-11-01 (account's zone)")
    export_cmd.add_argument("--until", metavar="DAY", help="last day, included (default: today)")
    export_cmd.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="(default: %(default)s)")
    export_cmd.add_argument("--output", metavar="FILE", help="write there instead of stdout")
    export_cmd.add_argument(
        "--delimiter",
        choices=[",", ";", "tab"],
        help="CSV column separator (default: ';' for a Russian time zone or locale, else ',')",
    )
    trackers_cmd = commands.add_parser(
        "trackers", help="the configured trackers and their hits; --apply: re-run them over stored transcripts"
    )
    trackers_cmd.add_argument(
        "--apply", action="store_true", help="re-run the current trackers over the stored calls of the period"
    )
    trackers_cmd.add_argument(
        "--since", metavar="DAY", help="with --apply: first day, e.g. 2026-11-01 (account's zone)"
    )
    trackers_cmd.add_argument("--until", metavar="DAY", help="with --apply: last day, included (default: today)")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (see `cli.common`)."""
    # Everything this process creates is its own alone, whatever umask it inherited: the
    # database and its -wal/-shm, recordings and their .part files, the lock, temporary work
    # directories (0600 files, 0700 directories). The store and the composition root also fix
    # the modes of such files left by older versions.
    os.umask(PRIVATE_UMASK)
    args = _parser().parse_args(argv)
    setup_logging(args.log_level or "INFO")
    command = COMMANDS[args.command]
    try:
        config = load(args, require_secrets=command.secrets) if command.config else None
        run: Handler = importlib.import_module(f"salesbot_poller.cli.{command.module}").run
        return run(args, config)
    except ConfigError as exc:
        for problem in exc.problems:
            err(f"config: {problem}")
        return EXIT_CONFIG
    except FatalError as exc:  # every secret a config loaded here holds is redacted
        err(redact_known(str(exc)))
        return EXIT_FATAL
    except peewee.PeeweeException as exc:
        err(f"database error: {redact_known(one_line(exc))} (check storage.database)")
        return EXIT_FATAL
