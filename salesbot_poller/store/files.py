"""The database's files and connections: a SQLite file kept private, opened for the service
(WAL, busy timeout, IMMEDIATE) or read-only for the fleet commands without leaving files; a
PostgreSQL URL is opened by `store.postgres` (no files of ours there)."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

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


def _file_identity(file: Path) -> tuple[int, int, int]:
    stat = file.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _readonly_sqlite(file: Path) -> tuple[peewee.Database, tuple[int, int, int] | None]:
    """A connection to `file` that writes nothing, and (when it reads the file as immutable)
    the file's identity at open, to be compared after the reads (`Store.snapshot_intact`).

    SQLite's `mode=ro` alone is not enough: on a WAL database with no -wal file (the service
    stopped: its last connection removed both) a read-only connection CREATES -wal and -shm,
    owned by whoever opened it (root) and left behind. So:
    - a -wal exists (the service has the database open): `mode=ro`, which reads through the
      service's -wal and -shm and creates nothing;
    - a WAL database without -wal: `immutable=1`, which opens no companion file and takes no
      lock. Everything committed is in the main file; a writer that starts meanwhile writes
      to a new -wal, and the main file changes only at a checkpoint, which the caller detects
      (`snapshot_intact`) and then reads again, through the -wal that now exists;
    - a rollback-journal database: `mode=ro` (readers create no file there).
    """
    if not file.is_file():
        raise FileNotFoundError(f"no database file {file}")
    with file.open("rb") as handle:
        header = handle.read(20)
    identity: tuple[int, int, int] | None = None
    wal = file.with_name(file.name + "-wal")
    if header[18:20] == WAL_FORMAT and not wal.exists():
        identity = _file_identity(file)
        flags = "mode=ro&immutable=1"
    else:
        flags = "mode=ro"
    db = peewee.SqliteDatabase(
        f"file:{quote(str(file.resolve()))}?{flags}",
        uri=True,
        pragmas={"busy_timeout": BUSY_TIMEOUT_MS, "query_only": 1},
    )
    return db, identity


def give_back_companions(file: Path) -> None:
    """A -wal/-shm that this process created by accident (the service closed the database
    between our look at its -wal and our open) and owns while the database belongs to
    someone else: given to the database's owner, 0600, so the service can still open it."""
    try:
        owner = file.stat()
    except OSError:
        return
    for suffix in ("-wal", "-shm"):
        companion = file.with_name(file.name + suffix)
        try:
            stat = companion.stat()
            if stat.st_uid == os.geteuid() and stat.st_uid != owner.st_uid:
                os.chown(companion, owner.st_uid, owner.st_gid)
                companion.chmod(PRIVATE_FILE)
        except OSError:
            continue
