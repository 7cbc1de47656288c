"""The database as `check` uses it: `check` creates no file or directory.

Contract:
- `database_problems(url, origins)` says what keeps `check` from using `storage.database`
  as it is, one line each naming the key and where it was set: a relative SQLite path (it
  would depend on the directory the command runs in), a directory that does not exist; and
  whether the database is there to be opened. A SQLite file that does not exist yet is not
  there: `check` then uses an in-memory one (`IN_MEMORY`) and the service creates the file.
  PostgreSQL is the server's (no file of ours): always there.
- `open_store(url)` opens it, the in-memory stand-in without a "database migrated" line.
"""

from __future__ import annotations

import logging

from salesbot_poller.cli.common import utc_now
from salesbot_poller.config import Origins, safe_url
from salesbot_poller.store import Store
from salesbot_poller.store.files import sqlite_file

IN_MEMORY = "sqlite:///:memory:"


def database_problems(url: str, origins: Origins | None = None) -> tuple[list[str], bool]:
    """What keeps `check` from using `storage.database` as it is, one line each, and whether
    the database is there to be opened (a SQLite file `check` would otherwise create is not)."""
    file = sqlite_file(url)
    if file is None:  # PostgreSQL (the server's, no file of ours) or an in-memory SQLite
        return [], True
    source = origins.of(("storage", "database")) if origins is not None else None
    said = f" (from {source})" if source else ""
    if not file.is_absolute():
        return [
            f"storage.database: {safe_url(url)} is a relative path (it would depend on the directory the command "
            f"runs in): use four slashes and an absolute path, e.g. sqlite:////var/lib/salesbot/salesbot.db{said}"
        ], False
    if not file.parent.is_dir():
        return [
            f"storage.database: the directory {file.parent} does not exist: create it (as the service's user, "
            f"mode 0700) or fix the path{said}"
        ], False
    return [], file.exists()


def open_store(url: str) -> Store:
    """The store `check` reads; the stand-in in-memory one without its "database migrated"
    line (no database was made, so none is said to be)."""
    if url != IN_MEMORY:
        return Store.open(url, int(utc_now().timestamp()))
    quiet = logging.getLogger("salesbot_poller.store.core")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        return Store.open(url, int(utc_now().timestamp()))
    finally:
        quiet.setLevel(level)
