"""The database's files and connections: a SQLite file kept private, opened for the service
(WAL, busy timeout, IMMEDIATE), or a read-only connection to a URI the fleet commands chose
(`readonly_sqlite`: nothing here chowns or chmods on that path); a PostgreSQL URL is opened by
`store.postgres` (no files of ours there)."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import peewee
from playhouse.db_url import connect, parse

from salesbot_poller.store.postgres import is_postgres, open_postgres

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000


def sqlite_file(url: str) -> Path | None:
    """The database file of a `sqlite:` URL (four slashes: absolute); None otherwise."""
    if not url.startswith("sqlite:"):
        return None
    path = url.split("://", 1)[1].lstrip("/")
    if not path or path == ":memory:":
        return None
    return Path("/" + path if url.startswith("sqlite:////") else path)


PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def make_private(path: Path, mode: int) -> None:
    """Set `path` to `mode` when it exists and we own it (a file someone else owns, e.g. a
    directory the admin shares, is left alone rather than failing the start)."""
    try:
        stat = path.stat()
        if stat.st_uid == os.geteuid() and stat.st_mode & 0o777 != mode:
            path.chmod(mode)
    except FileNotFoundError:
        pass
    except OSError as exc:  # a read-only mount: reading still works, so the start goes on
        log.warning("cannot set %s to mode %o: %s", path, mode, exc.strerror)


def private_dir(path: Path) -> None:
    """Create `path` (and missing parents) 0700 whatever the umask; an existing one we own is
    set to 0700 too. For directories that hold only our files (the audio directory)."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    make_private(path, PRIVATE_DIR)


def _private_sqlite_file(file: Path) -> None:
    """The database's directory (0700 if we create it: an existing one may be shared) and the
    file itself 0600, created empty if missing (SQLite accepts an empty file as a new
    database). SQLite gives -wal and -shm the database file's mode; older ones are fixed."""
    if not file.parent.exists():
        file.parent.mkdir(mode=PRIVATE_DIR, parents=True)
        make_private(file.parent, PRIVATE_DIR)  # mkdir's mode is cut by the umask
    with contextlib.suppress(FileExistsError):
        os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE))
    for path in (file, *(file.with_name(file.name + suffix) for suffix in SQLITE_COMPANIONS)):
        make_private(path, PRIVATE_FILE)


def lenient_text(raw: bytes) -> str:
    """A stored text value as str: bytes that are not UTF-8 (written by another tool, a
    damaged page) read as U+FFFD instead of failing the whole query."""
    return raw.decode("utf-8", "replace")


class ServiceSqliteDatabase(peewee.SqliteDatabase):
    """peewee's SQLite database whose connections read invalid UTF-8 as U+FFFD (a traceback in
    `export` or `status` helps nobody; the row's other values are still right)."""

    def _add_conn_hooks(self, conn: Any) -> None:
        conn.text_factory = lenient_text
        super()._add_conn_hooks(conn)  # type: ignore[misc]  # peewee's, not in its stubs


# The service's pragmas, in this order (auto_vacuum only takes on a new, empty file).
SERVICE_PRAGMAS = {
    # Freed pages in the file's free list: a new database gives them back to the file system
    # at `incremental_vacuum` (after `forget`); an older one keeps them (zeroed, see below).
    "auto_vacuum": "incremental",
    # Deleted and overwritten content is zeroed in the file, whatever the SQLite build's
    # default: after retention or `forget` no number or transcript stays in free space.
    "secure_delete": 1,
    "journal_mode": "wal",
    "busy_timeout": BUSY_TIMEOUT_MS,
    "foreign_keys": 1,
    # synchronous=full: in WAL mode, "normal" may roll the last commits back after a power
    # loss (not after a process crash), and a lost commit of a transcript or a message id
    # means paying or posting twice. A few commits per call make the fsync cheap.
    "synchronous": "full",
}


def _open_database(url: str) -> peewee.Database:
    if url.startswith("sqlite:"):
        file = sqlite_file(url)
        if file is not None:
            _private_sqlite_file(file)
        db: peewee.Database = ServiceSqliteDatabase(
            **parse(url),
            pragmas=SERVICE_PRAGMAS,
            # A transaction takes the write lock when it begins, not at its first write: two
            # writers then wait for each other (busy timeout) instead of one failing at once.
            lock_type="IMMEDIATE",
        )
        return db
    if is_postgres(url):
        return open_postgres(url)
    db = connect(url)
    return db


WAL_FORMAT = b"\x02\x02"  # bytes 18-19 of a SQLite header: the file is in WAL mode


def readonly_sqlite(uri: str) -> peewee.SqliteDatabase:
    """A connection (not yet opened) to the SQLite URI `uri` that never writes (`query_only`).

    The caller picks the URI and so what SQLite may touch: `file:...?mode=ro&immutable=1`
    opens the one file and no -wal/-shm, takes no lock; `file:...?mode=ro` reads through a
    running service's -wal and -shm, writing its read mark into the -shm, and creates both
    when missing, so it is for the database's owner (see `cli.fleet_sqlite`)."""
    pragmas = {"busy_timeout": BUSY_TIMEOUT_MS, "query_only": 1}
    return peewee.SqliteDatabase(uri, uri=True, autoconnect=False, pragmas=pragmas)
