"""What every command shares: exit codes, the config loader, the stderr and stdout printers,
the yes/no question.

Exit codes: 0 success; 1 `check` found a service not working (or a profile that cannot work),
`backfill` was not confirmed or the service is running, `forget` was not confirmed (or a call was being processed, or a
Telegram deletion failed for a reason worth another try), `demo` did not deliver, `retry` was given a call id that is
unknown or not failed, `fleet status` found an instance failing its cycles, a `fleet`
command (or `usage`) could not read an instance, `eval` could not analyse a call, `report` was not
sent; 2 invalid configuration or arguments
(one line per problem on stderr); 3 a fatal service error (credentials, account, chat) or
a database error, one line on stderr.

A command is a module of this package with `run(args, config) -> int` (see `cli.main`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo

from salesbot_poller.config import Config, config_path, load_with_origins
from salesbot_poller.domain import named_zone, time_text
from salesbot_poller.logs import add_secrets, redact, set_level, stderr_is_journal

EXIT_OK, EXIT_CHECK_FAILED, EXIT_CONFIG, EXIT_FATAL = 0, 1, 2, 3

YES = ("y", "yes", "д", "да")

Out = Callable[[str], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


def zone(config: Config | None) -> tzinfo | None:
    """The zone every command shows times in: `amocrm.timezone`; None (unset, or no config):
    the server's local zone."""
    return named_zone(config.amocrm.timezone) if config is not None else None


def when_text(timestamp: float | None, tz: tzinfo | None) -> str:
    """A moment as every command prints it, `2026-12-05 14:03 Europe/Moscow` (`domain.time_text`);
    "never" without one."""
    return time_text(timestamp, tz) if timestamp else "never"


def err(message: str) -> None:
    """One line on stderr, `salesbot-poller: ` first."""
    # Under systemd these are errors too: `journalctl -p err` must show why the service stopped.
    priority = "<3>" if stderr_is_journal(os.environ, sys.stderr) else ""
    print(f"{priority}salesbot-poller: {message}", file=sys.stderr)


def load(args: argparse.Namespace, *, require_secrets: bool, log_level: bool = True) -> Config:
    """The config of `--config` (else $SALESBOT_CONFIG, else the default path); its secrets are
    registered for redaction; with `log_level`, its `poller.log_level` applies unless
    `--log-level` was given. `ConfigError` lists the problems, each with its value's source.
    Where each value came from is kept as `args.origins` (`check` names and shows them)."""
    path = config_path(args.config, os.environ)
    config, args.origins = load_with_origins(path, os.environ, require_secrets=require_secrets)
    add_secrets(config.secrets())
    if log_level and args.log_level is None:
        set_level(config.poller.log_level)
    return config


def redacting_out(config: Config, *, flush: bool = False) -> Out:
    """Prints a line to stdout with the config's secrets replaced: stored errors and service
    answers are printed, redacted like the logs, to be sure."""
    secrets = config.secrets()

    def out(line: str) -> None:
        print(redact(line, secrets), flush=flush)

    return out


def confirmed(question: str, *, yes: bool, command: str, action: str, out: Out) -> bool:
    """True with `--yes`; else the answer to `question [y/N]` asked at the terminal (y, yes,
    д, да); without a terminal, False and a line saying to pass `--yes` to `action`."""
    if yes:
        return True
    if not sys.stdin.isatty():
        out(f"{command}: not confirmed: no terminal to ask; pass --yes to {action}")
        return False
    return input(f"{question} [y/N] ").strip().lower() in YES
