"""Command line: `salesbot-poller [--config PATH] [--log-level L] {once,run,check,status,retry}`.

Exit codes: 0 success; 1 `check` found a service not working, or `retry` was given a call
id that is unknown or not failed; 2 invalid configuration
(one line per problem on stderr); 3 a fatal service error (credentials, account, chat) or
a database error, one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import peewee

from salesbot_poller import __version__, commands
from salesbot_poller.app import build_app
from salesbot_poller.config import Config, config_path, load_config
from salesbot_poller.daemon import run_daemon
from salesbot_poller.errors import ConfigError, FatalError
from salesbot_poller.logs import add_secrets, redact, setup_logging
from salesbot_poller.pipeline import run_once
from salesbot_poller.recovery import exclusive
from salesbot_poller.store import Store

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
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("once", help="one poll cycle, then process every due call, then exit")
    commands.add_parser("run", help="the daemon: a cycle every poller.interval_seconds until SIGTERM")
    commands.add_parser("check", help="validate the config and check amoCRM, OpenAI and Telegram")
    commands.add_parser("status", help="calls per stage, last cycle, cursor, last errors")
    retry = commands.add_parser("retry", help="put failed calls back (CALL_ID ..., or --failed for all)")
    retry.add_argument("call_ids", nargs="*", type=int, metavar="CALL_ID")
    retry.add_argument("--failed", action="store_true", help="every failed call")
    return parser


def _err(message: str) -> None:
    print(f"salesbot-poller: {message}", file=sys.stderr)


def _load(path_arg: str | None, require_secrets: bool) -> Config:
    path = config_path(path_arg, os.environ)
    config = load_config(path, os.environ, require_secrets=require_secrets)
    add_secrets(config.secrets())
    return config


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.log_level)
    secrets: list[str] = []
    try:
        if args.command == "retry" and not (args.call_ids or args.failed):
            _err("retry: give CALL_ID(s) or --failed")
            return EXIT_CONFIG
        config = _load(args.config, require_secrets=args.command not in ("status", "retry"))
        secrets = config.secrets()
        return _dispatch(args.command, config, args)
    except ConfigError as exc:
        for problem in exc.problems:
            _err(f"config: {problem}")
        return EXIT_CONFIG
    except FatalError as exc:
        _err(redact(str(exc), secrets))
        return EXIT_FATAL
    except peewee.PeeweeException as exc:
        _err(f"database error: {redact(str(exc), secrets)} (check storage.database)")
        return EXIT_FATAL


def _dispatch(command: str, config: Config, args: argparse.Namespace | None = None) -> int:
    store = Store.open(config.storage.database, int(utc_now().timestamp()))
    secrets = config.secrets()

    def out(line: str) -> None:
        # Stored errors and service answers are printed: redacted like the logs, to be sure.
        print(redact(line, secrets))

    try:
        if command == "status":
            commands.status(store, out)
            return EXIT_OK
        if command == "retry" and args is not None:
            requeued = commands.retry(store, args.call_ids, args.failed, int(utc_now().timestamp()), out)
            return EXIT_OK if requeued else EXIT_CHECK_FAILED
        if command == "check":
            out(f"config: ok ({config.amocrm.base_url}, database {config.storage.database})")
            return EXIT_OK if commands.check(config, store, utc_now, out) else EXIT_CHECK_FAILED
        app = build_app(config, utc_now, store)
        with exclusive(config.storage.database):  # one process works the calls at a time
            if command == "once":
                run_once(app, utc_now())
                return EXIT_OK
            return run_daemon(app, utc_now)
    finally:
        store.close()
