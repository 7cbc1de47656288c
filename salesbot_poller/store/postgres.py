"""PostgreSQL (`storage.database = "postgresql://..."`): connections, the run lock, and which
errors are worth another try. Needs the `postgres` extra (psycopg2); SQLite needs none of this.

Contract:
- `is_postgres(url)`: a `postgres://` or `postgresql://` URL.
- `open_postgres(url, readonly=)` builds the peewee database: autocommit between
  transactions, READ COMMITTED, a 10 s connect timeout unless the URL sets one, TCP
  keepalives (a dead server or network is noticed in about a minute, not hours). A thread's
  connection that was lost (a server restart) is replaced at its next statement outside a
  transaction, inside the same `connection_context()`; the statement that met the loss
  fails. `readonly=True` makes every transaction read-only on the server (`fleet`, `usage`).
- `run_lock(url)` holds a session advisory lock on a connection of its own for the block:
  the one-process lock of `once`/`run`/`backfill` (the file lock of SQLite). The server
  releases it when that connection ends, so also when the process is killed. False is
  yielded when another session holds it: the caller refuses to start. The lock is keyed by
  the schema, so instances in two schemas of one database do not exclude each other. A
  server restart ends that session too: the running process keeps working without the lock
  (its other connections come back), which matters only if a second one is started then.
- `migration_lock(db)` serialises `Store.migrate` across processes (a transaction lock).
- `transient(exc)`: a lost connection, a deadlock, a serialisation failure, a lock or
  statement timeout, a server shutting down, down (connection refused) or starting: a write
  that must not be lost (`Store.committed`) is tried again after these, and a worker that
  met one waits for the server (`cli.daemon`). Every other error propagates.
- The URL's password never reaches an error text of ours; psycopg2's own texts do not quote it.
  `one_line(exc)` is an error's text for a one-line message.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import peewee
from playhouse.db_url import parse

SCHEMES = ("postgres://", "postgresql://")
CONNECT_TIMEOUT_SECONDS = 10
# Keepalives on every connection: a server that vanished without closing (a network cut, a
# VM paused) fails our statements in about a minute instead of the kernel's two hours, and
# ends the run lock's session on the server side just as soon.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
# The advisory locks' first key, our own space of locks ("SBot"); the second names the schema.
LOCK_SPACE = 0x53426F74
MIGRATION_LOCK_SPACE = LOCK_SPACE + 1
# SQLSTATE classes and codes after which a retried write may well succeed.
TRANSIENT_CLASSES = ("08",)  # connection exceptions
TRANSIENT_CODES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available (lock_timeout)
        "57014",  # query_canceled (statement_timeout)
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up)
    }
)
# A lost connection, or a server that is down or restarting (the texts of a failed connect:
# psycopg2 gives them no SQLSTATE): a write tried again once it is back gets through.
LOST_CONNECTION = (
    "server closed the connection",
    "connection already closed",
    "terminating connection",
    "connection refused",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
)


def is_postgres(url: str) -> bool:
    return url.startswith(SCHEMES)


class _PostgresDatabase(peewee.PostgresqlDatabase):
    """peewee's PostgreSQL database that replaces a lost connection (see the module contract)."""

    # peewee forgets the thread's open `connection_context()` blocks whenever it connects or
    # closes; a connection replaced inside one (after a server restart) must leave them as
    # they are, or the block's end fails ("pop from empty list").
    def connect(self, reuse_if_open: bool = False) -> bool:
        state: Any = getattr(self, "_state")  # noqa: B009 (peewee's per-thread state: not in its stubs)
        contexts = list(state.ctx)
        try:
            return bool(super().connect(reuse_if_open))
        finally:
            state.ctx = contexts

    def close(self) -> bool:
        state: Any = getattr(self, "_state")  # noqa: B009
        contexts = list(state.ctx)
        try:
            return bool(super().close())
        finally:
            state.ctx = contexts

    def cursor(self, named_cursor: Any = None) -> Any:
        state: Any = getattr(self, "_state")  # noqa: B009 (peewee's per-thread state: not in its stubs)
        # psycopg2 sets `closed` once it has met the loss; inside a transaction the loss must
        # surface (its writes are gone), outside one a new connection is all there is to do.
        if not state.closed and getattr(state.conn, "closed", False) and not self.in_transaction():
            self.close()
        return super().cursor(named_cursor)  # type: ignore[no-untyped-call]

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        try:
            return super().execute_sql(sql, params)  # type: ignore[no-untyped-call]
        except peewee.PeeweeException:
            raise
        except Exception as exc:
            # peewee maps a driver error by its class or its parent's name only: a deadlock
            # (DeadlockDetected < TransactionRollbackError < OperationalError) would escape as
            # psycopg2's own, which our callers do not read as a database error.
            wrapped = _as_peewee(exc)
            if wrapped is None:
                raise
            raise wrapped from exc


def _as_peewee(exc: Exception) -> peewee.PeeweeException | None:
    """psycopg2's `exc` as the peewee error of its nearest DB-API class; None for others."""
    for cls in type(exc).__mro__[1:]:
        mapped = getattr(peewee, cls.__name__, None)
        if isinstance(mapped, type) and issubclass(mapped, peewee.PeeweeException):
            return mapped(exc, *exc.args)
    return None


def _scalar(db: peewee.Database, sql: str, params: tuple[Any, ...] = ()) -> Any:
    """The first column of the first row `sql` returns."""
    return db.execute_sql(sql, params).fetchone()[0]  # type: ignore[no-untyped-call]


def connect_params(url: str, readonly: bool = False) -> dict[str, Any]:
    """The keyword arguments of `_PostgresDatabase` for `url` (the database name among them)."""
    params: dict[str, Any] = parse(url, unquote_password=True, unquote_user=True)
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    params.setdefault("application_name", "salesbot-poller")
    for key, value in KEEPALIVES.items():
        params.setdefault(key, value)
    if readonly:
        params["options"] = f"{params.get('options') or ''} -c default_transaction_read_only=on".strip()
    return params


def open_postgres(url: str, readonly: bool = False) -> peewee.Database:
    params = connect_params(url, readonly)
    database = params.pop("database")
    if not database:
        raise peewee.ImproperlyConfigured("the PostgreSQL URL names no database (postgresql://USER@HOST/DATABASE)")
    return _PostgresDatabase(database, **params)


def _schema_key(db: peewee.Database) -> int:
    """The advisory lock's second key: the schema the tables live in, so that two instances
    in two schemas of one database do not lock each other out (a 32-bit signed integer)."""
    schema = str(_scalar(db, "SELECT current_schema()"))
    return zlib.crc32(schema.encode()) - 2**31


@contextmanager
def run_lock(url: str) -> Iterator[bool]:
    """Hold the run lock of `url`'s database for the block; yields False (holding nothing)
    when another session has it. Connection errors propagate as peewee errors."""
    db = open_postgres(url)
    db.connect()
    try:
        key = _schema_key(db)
        taken = bool(_scalar(db, "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_SPACE, key)))
        yield taken
    finally:
        # Closing the session releases its advisory locks; no unlock to forget on any path.
        db.close()


def migration_lock(db: peewee.Database) -> None:
    """Within a transaction: wait for (and hold until its end) the right to migrate."""
    _scalar(db, "SELECT pg_advisory_xact_lock(%s, %s)", (MIGRATION_LOCK_SPACE, _schema_key(db)))


def one_line(exc: BaseException) -> str:
    """A database error's text on one line: psycopg2's run over several (with a tab-indented
    hint), which would break a line-per-instance or a one-line-on-stderr output."""
    return " ".join(str(exc).split())


def transient(exc: BaseException) -> bool:
    """Whether `exc` (a peewee error, or psycopg2's own) is one a retried write may get past."""
    orig = getattr(exc, "orig", None) or exc
    code = str(getattr(orig, "pgcode", None) or "")
    if code in TRANSIENT_CODES or code.startswith(TRANSIENT_CLASSES):
        return True
    text = str(orig).lower()
    return isinstance(exc, (peewee.OperationalError, peewee.InterfaceError)) and any(
        fragment in text for fragment in LOST_CONNECTION
    )
