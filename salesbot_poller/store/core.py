"""The durable store (peewee): cursor and small state, seen events, one row per call.

Contract:
- `Store.open(url)` connects (SQLite: WAL, a 30 s busy timeout, IMMEDIATE transactions, a
  connection per thread; PostgreSQL: see `store.postgres`), creates the SQLite file's
  directory, and applies pending migrations in a transaction (on PostgreSQL, one process at
  a time: a second one waits, then finds them applied).
- Every query of the application is a method here: the pipeline never reaches the models.
- `claim_next` claims the oldest due call of the given stages with a conditional UPDATE
  (PostgreSQL: of a row picked with FOR UPDATE SKIP LOCKED): no two threads or processes
  ever work the same call. A claim older than its lease is taken back; `renew` keeps a
  worker's own alive between stages; `release` gives it back. Delivery rows are claimed the
  same way before they are sent (`claim_delivery`): one sender per row. See `store.claims`.
- `committed(fn)` runs a write that must not be lost (the record of a message Telegram has
  accepted) and retries it while the database is busy (SQLite: another process holds the
  lock; PostgreSQL: a lost connection, a deadlock, a server restarting or refusing
  connections while it is down: `postgres.transient`).
  Such writes set values, so writing one again after an unknown outcome does no harm.
- `record_window` stores a window's events and advances the cursor in ONE transaction:
  the cursor never passes an event that is not durably recorded.
- `update(call, **fields)` commits at once; the pipeline calls it after each stage, so a
  restart resumes from the last committed stage. With `analysis_json`, the call's rows in
  the BI tables (`store.bi`) are rewritten in the same transaction.
- A database error propagates. It is never read as "already processed".
- Error texts are redacted before they are stored: `Call.last_error` and `skip_reason`,
  `Delivery.error`, `SeenEvent.error` and every `set_state` value pass through the store's
  `redact` (by default the process's secret registry, `logs.redact_known`, which also holds
  the amoCRM OAuth tokens as they rotate). Only `set_secret_state` stores a value as given:
  for the state that must hold a secret (the OAuth tokens).
- A SQLite database file (and its -wal/-shm) is private: created 0600 whatever the umask,
  an existing one we own set back to 0600; a directory created for it is 0700.
- Personal data: `clear_personal` removes a call's transcript, link, number,
  names, the analysis' quotes (in the BI tables too) and the content of its delivery rows
  in ONE transaction,
  keeping ids, times, scores and each row's sent ids and `done_at` (nothing is sent again);
  retention calls it batch by batch (`calls_to_clear`), `forget` for one number
  (`calls_with_number`).
- `Store.open_readonly(url)` (the `fleet` and `usage` commands, run as root beside the
  services) writes nothing and migrates nothing. A SQLite database is given as a `file:` URI
  chosen by the caller (`cli.fleet_sqlite` decides which file SQLite may open, and as whom);
  on PostgreSQL its every transaction is read-only on the server. Nothing on that path
  creates, chowns or chmods a file.

`Store` is assembled from one mixin per concern, each in its module: `base` (the database,
redaction, small state), `events` (the events window and cursor), `claims` (due calls and
their claims), `calls` (a call's updates and reads), `deliveries` (delivery rows), `usage`,
`budget` (the daily budget's reservations), `failures` (failed calls and `retry`),
`personal` (retention and `forget`), `reports` (the reports' and bot commands' reads) and
`corrections` (people's verdicts, the bot's button presses and the buttons' key).
Here: opening, migrations, must-keep writes (`committed`), the BI export and the bulk
insert of calls (`insert_calls_bulk`: seeded histories, benchmarks/scale.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar, cast

import peewee
from playhouse.db_url import connect

from salesbot_poller.logs import redact_known
from salesbot_poller.store import bi, bi_export
from salesbot_poller.store.base import BULK_VARIABLES, CURSOR_KEY, ERROR_FIELDS, StoreBase, insert_rows
from salesbot_poller.store.budget import BudgetLedger
from salesbot_poller.store.claims import Claims
from salesbot_poller.store.clips import ClipRows
from salesbot_poller.store.corrections import Corrections
from salesbot_poller.store.events import EventLog
from salesbot_poller.store.failures import Failures
from salesbot_poller.store.files import _open_database, readonly_sqlite
from salesbot_poller.store.migrations import MIGRATIONS
from salesbot_poller.store.models import Call, Migration, database_proxy
from salesbot_poller.store.personal import KEPT_STAGES, PersonalData
from salesbot_poller.store.postgres import is_postgres, migration_lock, open_postgres, transient
from salesbot_poller.store.report_figures import ReportFigures
from salesbot_poller.store.reports import ReportQueries
from salesbot_poller.store.trackers import TrackerRows
from salesbot_poller.store.usage import UsageQueries

__all__ = ["COMMIT_PATIENCE_SECONDS", "CURSOR_KEY", "ERROR_FIELDS", "KEPT_STAGES", "Store"]

log = logging.getLogger(__name__)

COMMIT_PATIENCE_SECONDS = 600.0  # how long a must-keep write is retried while the database is busy
T = TypeVar("T")


class Store(
    EventLog,
    Claims,
    Failures,
    PersonalData,
    UsageQueries,
    BudgetLedger,
    ReportQueries,
    ReportFigures,
    TrackerRows,
    Corrections,
    ClipRows,
    StoreBase,
):
    """All reads and writes of the database. One instance per process.

    `redact` hides secrets in every error text and state value before it is written (see the
    module contract); the default reads the process's secret registry at each write, so
    tokens registered later (rotated OAuth tokens) are hidden too.

    Its queries come from one mixin per concern (see the module docstring).
    """

    def __init__(self, db: peewee.Database, redact: Callable[[str], str] = redact_known) -> None:
        self.db = db
        self._redact = redact
        database_proxy.initialize(db)

    @classmethod
    def open(cls, url: str, now: int, redact: Callable[[str], str] = redact_known) -> Store:
        store = cls(_open_database(url), redact)
        store.migrate(now)
        return store

    @classmethod
    def open_readonly(cls, url: str) -> Store:
        """Open `url` to read only: no migration, nothing written. A SQLite database is a
        `file:` URI (`store.files.readonly_sqlite`: the caller says what SQLite may open; a
        `sqlite:` URL is refused, as it would let SQLite create -wal/-shm files as the
        caller); PostgreSQL is connected with read-only transactions; other databases are
        connected as they are and only read. `missing_migrations` and `unknown_migrations`
        tell whether the schema is this release's."""
        if url.startswith("file:"):
            store = cls(readonly_sqlite(url), lambda text: text)
            store.db.connect()
            return store
        if url.startswith("sqlite:"):
            raise ValueError("a SQLite database is opened read-only through a file: URI")
        if is_postgres(url):
            return cls(open_postgres(url, readonly=True), lambda text: text)
        return cls(connect(url), lambda text: text)

    def missing_migrations(self) -> list[str]:
        """The migrations of this release not recorded in the database (all when it has none)."""
        if not self.db.table_exists(Migration._meta.table_name):
            return [name for name, _ in MIGRATIONS]
        done = {str(m.name) for m in Migration.select(Migration.name)}
        return [name for name, _ in MIGRATIONS if name not in done]

    def unknown_migrations(self) -> list[str]:
        """The migrations recorded in the database that this release does not know: a newer
        release has upgraded it."""
        if not self.db.table_exists(Migration._meta.table_name):
            return []
        known = {name for name, _ in MIGRATIONS}
        return sorted(str(m.name) for m in Migration.select(Migration.name) if m.name not in known)

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()

    def migrate(self, now: int, upto: str | None = None) -> list[str]:
        """Apply pending migrations in order, each recorded in the `migration` table; with
        `upto`, only as far as that one (a test upgrades a database step by step)."""
        with self.db.atomic():
            if isinstance(self.db, peewee.PostgresqlDatabase):
                migration_lock(self.db)  # SQLite's IMMEDIATE transaction serialises this by itself
            self.db.create_tables([Migration])
            done = {m.name for m in Migration.select(Migration.name)}
            applied = []
            for name, step in MIGRATIONS:
                if name not in done:
                    step(self.db)
                    Migration.create(name=name, applied_at=now)
                    applied.append(name)
                if name == upto:
                    break
        if applied:
            log.info("database migrated: %s", ", ".join(applied))
        return applied

    def committed(self, write: Callable[[], T], patience: float = COMMIT_PATIENCE_SECONDS) -> T:
        """Run `write` (a commit that must not be lost); while the database is locked by
        someone else, try again with backoff for up to `patience` seconds."""
        deadline = time.monotonic() + patience
        delay = 0.5
        while True:
            try:
                return write()
            except Exception as exc:  # psycopg2's own too: peewee leaves a deadlock's unwrapped
                if not self._busy(exc):
                    raise
                if time.monotonic() + delay > deadline:
                    raise
                said = " ".join(str(exc).split())  # psycopg2's texts run over several lines
                log.warning("database busy (%s): the record of a sent message is written again in %.1f s", said, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _busy(self, exc: Exception) -> bool:
        """Whether a write that failed with `exc` may succeed if tried again (see `committed`)."""
        if isinstance(self.db, peewee.PostgresqlDatabase):
            return transient(exc)
        return isinstance(exc, peewee.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))

    # --- BI -------------------------------------------------------------------

    def export_pages(
        self, start: int, end: int, item_fields: Sequence[str] = bi.ITEM_FIELDS, page: int = bi_export.PAGE
    ) -> Iterator[bi_export.ExportPage]:
        """Analysed calls that happened in [start, end), oldest first, `page` at a time, as
        plain rows with their items, objections and tracker hits (`store.bi_export`)."""
        return bi_export.export_pages(self.db, start, end, item_fields, page)

    def export_item_ids(self, start: int, end: int) -> list[str]:
        """The rubric item ids of the analysed calls in [start, end), in rubric order."""
        return bi.item_ids_between(start, end)

    def insert_calls_bulk(self, rows: Sequence[Mapping[str, object]], now: int) -> list[int]:
        """Insert new calls in ONE transaction, many rows per INSERT, with their BI rows written
        from each `analysis_json` as `update` writes them (`bi.insert_facts`; analysed at
        `now`); returns their ids in the order of `rows`.

        Each row maps `Call` column names to values, every row the same names, `event_id`
        unique and new; a row with a `phone` gives its `phone_key` (`phones.key`) or leaves
        it out (then `fill_phone_keys` computes it at the first look-up by number). For a
        history seeded in bulk (benchmarks/scale.py): the pipeline stores a call through
        `record_window` and `update`."""
        if not rows:
            return []
        with self.db.atomic():
            insert_rows(self.db, Call, rows)
            ids: dict[str, int] = {}
            events = [str(row["event_id"]) for row in rows]
            for part in peewee.chunked(events, BULK_VARIABLES):
                found = Call.select(Call.event_id, Call.id).where(Call.event_id.in_(part)).tuples()
                ids.update(cast(Iterable[tuple[str, int]], found))
            stored = [ids[event] for event in events]
            bi.insert_facts(
                (
                    Call(**{**row, "id": call_id})
                    for call_id, row in zip(stored, rows, strict=True)
                    if row.get("analysis_json")
                ),
                now,
            )
        return stored
