"""Logging for journald: plain lines on stderr, secrets redacted, noisy libraries quieted."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable

QUIET = ("urllib3", "requests", "openai", "httpx", "httpx2", "httpcore", "telebot", "apscheduler", "peewee")


class RedactingFormatter(logging.Formatter):
    """Replaces every known secret in the final line (message, arguments and traceback)."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self.secrets: set[str] = set()

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)


class _DropBusySkips(logging.Filter):
    """A cycle longer than the interval makes APScheduler warn at every tick: one is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


_formatter: RedactingFormatter | None = None


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr; journald adds the time, so it is omitted under systemd."""
    global _formatter
    under_journal = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s" if under_journal else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    _formatter = RedactingFormatter(fmt)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter)
    handler.addFilter(_DropBusySkips())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def add_secrets(secrets: Iterable[str]) -> None:
    """Register values that must never appear in a log line."""
    if _formatter is not None:
        _formatter.secrets.update(secrets)
