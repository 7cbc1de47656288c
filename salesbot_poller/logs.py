"""Logging for journald: plain lines on stderr, secrets redacted, noisy libraries quieted.

Secrets are kept in one process-wide registry (`add_secrets`): the config's secrets, and the
amoCRM OAuth tokens each time they are loaded or rotated. Log lines are redacted with it, and
so is every error text the store writes (`redact_known`), so a token rotated an hour ago is
hidden from both.

Under systemd (`JOURNAL_STREAM` names our stderr) every line starts with its syslog priority,
`<3>` error, `<4>` warning, `<6>` info, `<7>` debug, so `journalctl -p err` finds errors; a
multi-line record (a traceback) carries the prefix on each line, since journald reads the
stream line by line. Elsewhere lines carry the time instead.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import TextIO

QUIET = (
    "urllib3",
    "requests",
    "openai",
    "httpx",
    "httpx2",
    "httpcore",
    "telebot",
    "apscheduler",
    "peewee",
    "pymorphy3",
)


# logging level -> syslog priority (sd-daemon(3)); NOTICE (5) has no logging level.
PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (a custom level maps to the next lower one)."""
    for level, priority in sorted(PRIORITIES.items(), reverse=True):
        if levelno >= level:
            return priority
    return 7


class SecretRegistry:
    """A growing set of values never to be written out; safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self._values = self._values | {secret for secret in secrets if secret}

    def values(self) -> frozenset[str]:
        return self._values  # replaced, never mutated: a reader needs no lock

    def redact(self, text: str) -> str:
        return redact(text, self._values)


# The process's registry. Empty until the CLI (or `build_app`) adds the config's secrets.
_registry = SecretRegistry()


class RedactingFormatter(logging.Formatter):
    """Replaces every known secret in the final line (message, arguments and traceback):
    its own `secrets` and those of the process registry (`add_secrets`); with `journal=True`
    each line starts with the record's `<priority>`."""

    def __init__(self, fmt: str, *, journal: bool = False) -> None:
        super().__init__(fmt)
        self.secrets: set[str] = set()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = redact(super().format(record), self.secrets | _registry.values())
        if not self.journal:
            return text
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.split("\n"))


def stderr_is_journal(environ: Mapping[str, str], stream: TextIO) -> bool:
    """True when `JOURNAL_STREAM` ("device:inode") names `stream`, as systemd sets it.

    The variable is inherited by children whose stderr may go elsewhere, hence the check.
    """
    value = environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


class _DropBusySkips(logging.Filter):
    """A cycle longer than the interval makes APScheduler warn at every tick: one is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


MIN_SECRET_LENGTH = 4  # shorter values would blank out ordinary words


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret (of at least 4 characters) replaced by `***`.

    Longest first, so a secret containing another is hidden whole. Each secret's JSON-escaped
    forms are replaced too: an error text stored inside a JSON document (the last cycle's
    summary) is redacted as well as a plain one.
    """
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True):
        for form in _forms(secret):
            text = text.replace(form, "***")
    return text


def _forms(secret: str) -> list[str]:
    escaped = {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]} - {secret}
    return [secret, *escaped]


def redact_known(text: str) -> str:
    """`text` redacted of every secret registered in this process (`add_secrets`)."""
    return _registry.redact(text)


def excerpt(text: str, limit: int = 200) -> str:
    """A service's text for an error message: redacted of every known secret FIRST, then cut
    to `limit` characters (a cut inside a secret would leave its start unredacted)."""
    text = redact_known(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr; journald adds the time, so it is omitted under systemd."""
    under_journal = stderr_is_journal(os.environ, sys.stderr)
    fmt = "%(levelname)s %(name)s: %(message)s" if under_journal else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(fmt, journal=under_journal))
    handler.addFilter(_DropBusySkips())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)


def set_level(level: str) -> None:
    """Set the level of our logs (libraries in QUIET never go below WARNING)."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def add_secrets(secrets: Iterable[str]) -> None:
    """Register values that must never appear in a log line or a stored error text."""
    _registry.add(secrets)
