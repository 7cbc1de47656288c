"""The durable store (peewee): cursor and small state, seen events, one row per call.

Contract:
- `Store.open(url)` connects (SQLite: WAL, a 30 s busy timeout, IMMEDIATE transactions, a
  connection per thread; PostgreSQL: see `store.postgres`), creates the SQLite file's
  directory, and applies pending migrations in a transaction (on PostgreSQL, one process at
  a time: a second one waits, then finds them applied).
- Every query of the application is a method here: the pipeline never reaches the models.
- `claim_next` claims the oldest due call of the given stages with one conditional UPDATE
  (PostgreSQL: one UPDATE of a row picked with FOR UPDATE SKIP LOCKED): no two threads or
  processes ever work the same call. `release` gives it back.
- `committed(fn)` runs a write that must not be lost (the record of a message Telegram has
  accepted) and retries it while the database is busy (SQLite: another process holds the
  lock; PostgreSQL: a lost connection, a deadlock, a server restarting: `postgres.transient`).
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
  services) writes nothing: no migration, no file created, no -wal/-shm of ours left behind;
  see its docstring for how SQLite is kept from creating them. On PostgreSQL its every
  transaction is read-only on the server.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import peewee
from playhouse.db_url import connect

from salesbot_poller.domain import TERMINAL_STAGES, CallEvent, Planned, Stage, without_personal_data
from salesbot_poller.logs import excerpt, redact_known
from salesbot_poller.store import bi
from salesbot_poller.store.files import (
    _file_identity,
    _open_database,
    _readonly_sqlite,
    give_back_companions,
    sqlite_file,
)
from salesbot_poller.store.migrations import MIGRATIONS
from salesbot_poller.store.models import Call, Delivery, Migration, SeenEvent, State, Usage, database_proxy
from salesbot_poller.store.postgres import is_postgres, migration_lock, open_postgres, transient
from salesbot_poller.store.reports import ReportQueries

log = logging.getLogger(__name__)

CURSOR_KEY = "events_cursor"
# A call at one of these keeps its stage when its personal data goes; any other becomes skipped.
KEPT_STAGES = frozenset({Stage.NOTIFIED.value, Stage.MISSED_ALERTED.value, Stage.SKIPPED.value})
COMMIT_PATIENCE_SECONDS = 600.0  # how long a must-keep write is retried while the database is busy
T = TypeVar("T")
M = TypeVar("M", bound=peewee.Model)


ERROR_FIELDS = ("last_error", "skip_reason", "error")  # texts that may quote an upstream answer


class Store(ReportQueries):  # the reports' and bot commands' reads: `store.reports`
    """All reads and writes of the database. One instance per process.

    `redact` hides secrets in every error text and state value before it is written (see the
    module contract); the default reads the process's secret registry at each write, so
    tokens registered later (rotated OAuth tokens) are hidden too.
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
        """Open `url` to read only: no migration, nothing written (see `_readonly_sqlite`); a
        missing SQLite file raises `FileNotFoundError`. `missing_migrations` tells whether the
        schema is this release's. PostgreSQL is connected with read-only transactions; other
        databases are connected as they are and only read."""
        if url.startswith("sqlite:"):
            file = sqlite_file(url)
            if file is None:
                raise FileNotFoundError(f"{url}: not a database file")
            db, identity = _readonly_sqlite(file)
            store = cls(db, lambda text: text)
            store._readonly_file, store._identity = file, identity
            return store
        if is_postgres(url):
            return cls(open_postgres(url, readonly=True), lambda text: text)
        return cls(connect(url), lambda text: text)

    _readonly_file: Path | None = None
    _identity: tuple[int, int, int] | None = None

    def snapshot_intact(self) -> bool:
        """False when a read-only store read a file that has changed since it was opened (a
        checkpoint ran meanwhile): what was read may be torn; open it again and read again."""
        if self._readonly_file is None or self._identity is None:
            return True
        try:
            return _file_identity(self._readonly_file) == self._identity
        except OSError:
            return False

    def missing_migrations(self) -> list[str]:
        """The migrations of this release not recorded in the database (all when it has none)."""
        if not self.db.table_exists(Migration._meta.table_name):
            return [name for name, _ in MIGRATIONS]
        done = {str(m.name) for m in Migration.select(Migration.name)}
        return [name for name, _ in MIGRATIONS if name not in done]

    def _redacted(self, fields: dict[str, Any]) -> dict[str, Any]:
        return {
            key: self._redact(value) if key in ERROR_FIELDS and isinstance(value, str) else value
            for key, value in fields.items()
        }

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()
        if self._readonly_file is not None:
            give_back_companions(self._readonly_file)

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

    # --- small state ---------------------------------------------------------------

    def get_state(self, key: str) -> str | None:
        row = State.get_or_none(State.key == key)
        return None if row is None else str(row.value)

    def set_state(self, key: str, value: str) -> None:
        """Store `value` under `key`, redacted of every known secret (a summary may quote an
        error: the last cycle's)."""
        self.set_secret_state(key, self._redact(value))

    def set_secret_state(self, key: str, value: str) -> None:
        """Store `value` as given: only for state that must hold a secret (OAuth tokens)."""
        # An upsert on the key (INSERT OR REPLACE is SQLite's own: PostgreSQL refuses it).
        State.insert(key=key, value=value).on_conflict(
            conflict_target=[State.key], update={State.value: value}
        ).execute()

    def cursor(self) -> int | None:
        value = self.get_state(CURSOR_KEY)
        return None if value is None else int(value)

    # --- events -----------------------------------------------------------------------

    def record_window(
        self,
        events: Iterable[CallEvent],
        malformed: Iterable[tuple[str, str, str | None]],
        until: int,
        now: int,
        raw_of: Callable[[CallEvent], str | None] = lambda event: None,
    ) -> tuple[int, list[tuple[str, str]]]:
        """Record a window's events, new calls and the cursor atomically.

        Returns the number of new calls and the malformed events not seen before. An event that
        cannot be stored is set aside like a malformed one, kept as `raw_of(event)`.
        """
        new_calls = 0
        new_malformed = []
        malformed = list(malformed)
        with self.db.atomic():
            for event in events:
                try:
                    with self.db.atomic():  # a savepoint: one event that cannot be stored is set aside
                        new_calls += self._record_event(event, now)
                except (peewee.OperationalError, peewee.InterfaceError):
                    raise  # the database, not the event: the whole window waits
                except Exception as exc:  # confined to this event, with its reason
                    reason = f"quarantined: could not be stored ({type(exc).__name__}: {excerpt(str(exc))})"
                    malformed.append((event.event_id, reason, raw_of(event)))
            for event_id, reason, raw in malformed:
                error = self._redact(reason)
                query = SeenEvent.insert(event_id=event_id, seen_at=now, error=error, raw_json=raw).on_conflict_ignore()
                if query.as_rowcount().execute():
                    new_malformed.append((event_id, reason))
            self.set_state(CURSOR_KEY, str(until))
        return new_calls, new_malformed

    def set_aside_event(self, event_id: str) -> SeenEvent | None:
        """A set-aside event by id (None when there is none such, or it became a call)."""
        return SeenEvent.get_or_none(SeenEvent.event_id == event_id, SeenEvent.error.is_null(False))

    def readmit_event(self, event: CallEvent, now: int) -> Call:
        """Record a set-aside event (now valid) as a new call, in one transaction."""
        with self.db.atomic():
            SeenEvent.delete().where(SeenEvent.event_id == event.event_id).execute()
            self._record_event(event, now)
        return Call.get(Call.event_id == event.event_id)

    def _record_event(self, event: CallEvent, now: int) -> int:
        """Record one event and its call; 1 if it is new."""
        inserted = (
            SeenEvent.insert(event_id=event.event_id, created_at=event.created_at, seen_at=now)
            .on_conflict_ignore()
            .as_rowcount()
            .execute()
        )
        if not inserted:
            return 0
        Call.create(
            event_id=event.event_id,
            direction=event.direction,
            entity_type=event.entity_type,
            entity_id=event.entity_id,
            note_id=event.note_id,
            event_created_at=event.created_at,
            first_seen_at=now,
            updated_at=now,
        )
        return 1

    # --- calls ------------------------------------------------------------------------

    def due_calls(self, now: int, stages: Iterable[Stage] | None = None, kind: str | None = None) -> list[Call]:
        """Unfinished calls whose next attempt is due, oldest first (of `kind`, when given)."""
        wanted = [s.value for s in (stages or [s for s in Stage if s not in TERMINAL_STAGES])]
        query = Call.select().where(Call.stage.in_(wanted), Call.next_attempt_at <= now)
        if kind is not None:
            query = query.where(Call.kind == kind)
        return list(query.order_by(Call.id))

    def count_put_off(self, now: int, stages: Iterable[Stage]) -> int:
        """Answered calls at `stages` whose next attempt is after `now` (put off: the daily
        budget, a backoff)."""
        wanted = [s.value for s in stages]
        query = Call.select().where(Call.stage.in_(wanted), Call.kind == "conversation", Call.next_attempt_at > now)
        return int(query.count())

    def claim_next(
        self, worker: str, now: int, stages: Iterable[Stage], kind: str, exclude: Iterable[int] = ()
    ) -> Call | None:
        """Claim the oldest due unclaimed call of `stages` and `kind` (not in `exclude`) for
        `worker`; None if there is none.

        The claim is one conditional UPDATE (the row must still be unclaimed and due), so of
        two threads or processes racing for a call exactly one gets it. On PostgreSQL the row
        is picked with FOR UPDATE SKIP LOCKED in that same UPDATE: racing workers take
        different calls at once instead of queueing behind one row lock.
        """
        wanted = [s.value for s in stages]
        claimable = (
            Call.stage.in_(wanted),
            Call.kind == kind,
            Call.next_attempt_at <= now,
            Call.claimed_by.is_null(),
            Call.id.not_in(list(exclude)),
        )
        if isinstance(self.db, peewee.PostgresqlDatabase):
            oldest = Call.select(Call.id).where(*claimable).order_by(Call.id).limit(1).for_update(skip_locked=True)
            claimed = Call.update(claimed_by=worker, claimed_at=now).where(Call.id == oldest, *claimable)
            ids = [int(row[0]) for row in claimed.returning(Call.id).tuples().execute()]
            return Call.get_by_id(ids[0]) if ids else None
        while True:
            candidate = Call.select(Call.id).where(*claimable).order_by(Call.id).limit(1).first()
            if candidate is None:
                return None
            taken = Call.update(claimed_by=worker, claimed_at=now).where(Call.id == candidate.id, *claimable).execute()
            if taken:
                return Call.get_by_id(candidate.id)

    def release(self, call: Call) -> None:
        """Give a claimed call back (its stage and next attempt say what comes next)."""
        Call.update(claimed_by=None, claimed_at=None).where(Call.id == call.id).execute()
        call.claimed_by = call.claimed_at = None

    def release_all_claims(self) -> int:
        """At start: claims left by a process that died (one process works a database at a time)."""
        return int(Call.update(claimed_by=None, claimed_at=None).where(Call.claimed_by.is_null(False)).execute())

    def update(self, call: Call, now: int, **fields: Any) -> None:
        """Commit `fields` of `call` (and mirror them on the instance)."""
        fields = self._redacted(fields) | {"updated_at": now}
        for key, value in fields.items():
            if isinstance(value, Stage):
                fields[key] = value.value
        with self.db.atomic():  # the BI tables are written with the analysis they come from
            Call.update(**fields).where(Call.id == call.id).execute()
            for key, value in fields.items():
                setattr(call, key, value)
            if "analysis_json" in fields:
                bi.write_facts(call, now)

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

    def stage_counts(self) -> dict[str, int]:
        query = Call.select(Call.stage, peewee.fn.COUNT(Call.id)).group_by(Call.stage).tuples()
        rows = cast(Iterable[tuple[str, int]], query)  # .tuples() rows, not Call instances
        return {str(stage): int(count) for stage, count in rows}

    def profile_counts(self, since: int | None = None) -> dict[str, dict[str, int]]:
        """Calls per profile name and stage (those given a profile; since `since` when given)."""
        query = Call.select(Call.profile, Call.stage, peewee.fn.COUNT(Call.id)).where(Call.profile.is_null(False))
        if since is not None:
            query = query.where(Call.event_created_at >= since)
        rows = cast(Iterable[tuple[str, str, int]], query.group_by(Call.profile, Call.stage).tuples())
        found: dict[str, dict[str, int]] = {}
        for profile, stage, count in rows:
            found.setdefault(str(profile), {})[str(stage)] = int(count)
        return found

    def recent_errors(self, limit: int = 5) -> list[Call]:
        query = (
            Call.select()
            .where(Call.last_error.is_null(False))
            .order_by(Call.updated_at.desc(), Call.id.desc())
            .limit(limit)
        )
        return list(query)

    def calls_between(self, start: int, end: int) -> list[Call]:
        """Classified calls that happened in [start, end), in the order they were recorded."""
        query = Call.select().where(
            Call.event_created_at >= start, Call.event_created_at < end, Call.kind.is_null(False)
        )
        return list(query.order_by(Call.id))

    def outgoing_since(self, since: int) -> list[Call]:
        """Outgoing calls that happened since `since`, oldest first."""
        query = Call.select().where(Call.direction == "out", Call.event_created_at >= since)
        return list(query.order_by(Call.event_created_at))

    def alerted_unreturned(self, since: int) -> list[Call]:
        """Missed calls since `since` whose alert was accepted and that are not returned yet."""
        query = Call.select().where(
            Call.kind == "missed",
            Call.stage == Stage.MISSED_ALERTED.value,
            Call.event_created_at >= since,
            Call.callback_call_id.is_null(),
            Call.personal_removed_at.is_null(),  # forgotten: no reply, no escalation
        )
        return list(query)

    def summarise(self, items: Iterable[Planned], calls: Iterable[Call], now: int) -> int:
        """Store the storm summary `items` and mark each of `calls` still waiting for its alert
        (stage `missed`) as alerted by it (`summarised_in` = the first item's key), in ONE
        transaction: a crash leaves either both or neither. Returns how many were marked."""
        planned = list(items)
        ids = [call.id for call in calls]
        marked = 0
        with self.db.atomic():
            self.enqueue(planned, None, now)
            for start in range(0, len(ids), 500):  # well under SQLite's limit of bound variables
                marked += (
                    Call.update(
                        stage=Stage.MISSED_ALERTED.value,
                        summarised_in=planned[0].key,
                        updated_at=now,
                        last_error=None,
                    )
                    .where(Call.id.in_(ids[start : start + 500]), Call.stage == Stage.MISSED.value)
                    .execute()
                )
        return marked

    def missed_by_event(self, event_ids: Iterable[str]) -> list[Call]:
        """Calls of `event_ids` waiting for their missed-call alert."""
        query = Call.select().where(Call.event_id.in_(list(event_ids)), Call.stage == Stage.MISSED.value)
        return list(query)

    def seen_event_ids(self, event_ids: Iterable[str]) -> set[str]:
        """Which of `event_ids` are recorded already."""
        query = SeenEvent.select(SeenEvent.event_id).where(SeenEvent.event_id.in_(list(event_ids)))
        return {str(row.event_id) for row in query}

    def resume_stage(self, call: Call) -> Stage:
        """The stage a call would resume from, judged by its stored artifacts.

        Used for a `failed` call (whose stage no longer says how far it got): the first stage
        whose result is not stored yet, so nothing already paid for is done again.
        """
        if self.find_delivery(f"call:{call.id}") is not None:
            return Stage.NOTIFYING  # parts already accepted are not sent again
        if call.kind == "missed":
            return Stage.MISSED
        if call.analysis_json is not None:
            return Stage.ANALYSED
        if call.transcript is not None:
            return Stage.TRANSCRIBED
        if call.audio_path:
            return Stage.DOWNLOADED  # the transcription stage falls back to READY if the file is gone
        if call.kind == "conversation":
            return Stage.READY
        return Stage.NEW

    # --- deliveries ---------------------------------------------------------------------

    def enqueue(self, items: Iterable[Planned], call_id: int | None, now: int) -> None:
        """Store planned items; an item whose key is stored already is left as it is."""
        for item in items:
            Delivery.insert(
                key=item.key,
                call_id=call_id,
                kind=item.kind,
                chat_id=item.to.chat_id if item.to else None,
                thread_id=item.to.thread_id if item.to else None,
                reply_to_key=item.reply_to_key,
                payload_json=json.dumps(item.payload, ensure_ascii=False),
                created_at=now,
            ).on_conflict_ignore().execute()

    def pending(self, *, call_id: int | None = None, kinds: Iterable[str] | None = None) -> list[Delivery]:
        """Deliveries not done yet, in the order they were stored."""
        query = Delivery.select().where(Delivery.done_at.is_null())
        if call_id is not None:
            query = query.where(Delivery.call_id == call_id)
        if kinds is not None:
            query = query.where(Delivery.kind.in_(list(kinds)))
        return list(query.order_by(Delivery.id))

    def find_delivery(self, key: str) -> Delivery | None:
        return Delivery.get_or_none(Delivery.key == key)

    def update_delivery(self, row: Delivery, **fields: Any) -> None:
        """Commit `fields` of `row` (and mirror them on the instance)."""
        fields = self._redacted(fields)
        Delivery.update(**fields).where(Delivery.id == row.id).execute()
        for name, value in fields.items():
            setattr(row, name, value)

    def due_extras(self, now: int) -> list[Delivery]:
        """Unsent rows of calls whose own card or alert is delivered (their other destinations:
        the alert chat, the transcript, amoCRM), due by `now`, in the order they were stored."""
        call = Call.alias()
        query = (
            Delivery.select()
            .join(call, on=(Delivery.call_id == call.id))
            .where(
                Delivery.done_at.is_null(),
                Delivery.next_attempt_at <= now,
                call.stage.in_([Stage.NOTIFIED.value, Stage.MISSED_ALERTED.value]),
            )
        )
        return list(query.order_by(Delivery.id))

    def failing_deliveries(self, limit: int = 5) -> tuple[int, int, list[Delivery]]:
        """Destinations in trouble: how many rows wait for another try after a failure, how many
        were given up, and the latest `limit` of either."""
        failing = Delivery.select().where(Delivery.error.is_null(False))
        waiting = failing.where(Delivery.done_at.is_null()).count()
        given_up = failing.where(Delivery.done_at.is_null(False)).count()
        latest = failing.order_by(Delivery.id.desc()).limit(limit)
        return waiting, given_up, list(latest)

    def newer_lead_write(self, lead_id: int, started_at: int, call_id: int) -> bool:
        """Whether the lead `lead_id` already got its fields (`amo_fields`) from a call newer
        than (`started_at`, `call_id`): by start time, then id."""
        call = Call.alias()
        query = (
            Delivery.select(Delivery.id)
            .join(call, on=(Delivery.call_id == call.id))
            .where(
                Delivery.kind == "amo_fields",
                Delivery.sent_ids_json != "[]",
                call.entity_type == "leads",
                call.entity_id == lead_id,
                (call.event_created_at > started_at) | ((call.event_created_at == started_at) & (call.id > call_id)),
            )
        )
        return bool(query.exists())

    def older_cards_waiting(self, row: Delivery, due_by: int) -> bool:
        """Whether a card or alert of an earlier call to the same chat is rendered, unsent, and
        due by `due_by`: it goes first, so one chat's cards keep the order of their calls."""
        call = Call.alias()
        query = (
            Delivery.select(Delivery.id)
            .join(call, on=(Delivery.call_id == call.id))
            .where(
                Delivery.done_at.is_null(),
                Delivery.key.startswith("call:"),
                Delivery.kind.in_(["card", "alert"]),
                Delivery.chat_id.is_null() if row.chat_id is None else Delivery.chat_id == row.chat_id,
                Delivery.call_id < row.call_id,
                call.next_attempt_at <= due_by,
                call.stage == Stage.NOTIFYING.value,
            )
        )
        return query.exists()

    # --- usage --------------------------------------------------------------------------

    def add_usage(self, **fields: Any) -> None:
        Usage.create(**fields)

    def usage_since(self, since: int, until: int | None = None) -> tuple[int, float, int, int]:
        """Requests, audio seconds, input and output tokens recorded since `since` (and before
        `until`, when given)."""
        query = Usage.select(
            peewee.fn.COUNT(Usage.id),
            peewee.fn.COALESCE(peewee.fn.SUM(Usage.audio_seconds), 0),
            peewee.fn.COALESCE(peewee.fn.SUM(Usage.input_tokens), 0),
            peewee.fn.COALESCE(peewee.fn.SUM(Usage.output_tokens), 0),
        ).where(Usage.at >= since)
        if until is not None:
            query = query.where(Usage.at < until)
        row = cast(tuple[int, float, int, int], query.tuples().get())  # a tuple, not a Usage
        return int(row[0]), float(row[1]), int(row[2]), int(row[3])

    def analysed_calls(self, since: int, until: int) -> int:
        """Calls whose analysis was paid for in [since, until) (its usage row's time)."""
        query = Usage.select(peewee.fn.COUNT(peewee.fn.DISTINCT(Usage.call_id))).where(
            Usage.kind == "analysis", Usage.at >= since, Usage.at < until
        )
        return int(query.scalar() or 0)

    def missed_alerted_since(self, since: int) -> int:
        """Missed calls that happened since `since` and whose alert went out (alone or in a
        storm summary)."""
        query = Call.select().where(
            Call.kind == "missed", Call.stage == Stage.MISSED_ALERTED.value, Call.event_created_at >= since
        )
        return int(query.count())

    # --- BI -------------------------------------------------------------------

    def export_pages(self, start: int, end: int, page: int = bi.PAGE) -> Iterator[list[bi.ExportedCall]]:
        """Analysed calls that happened in [start, end), oldest first, `page` at a time."""
        return bi.export_pages(start, end, page)

    def export_item_ids(self, start: int, end: int) -> list[str]:
        """The rubric item ids of the analysed calls in [start, end), in rubric order."""
        return bi.item_ids_between(start, end)

    # --- failures and retry ---------------------------------------------------

    def find_call(self, call_id: int) -> Call | None:
        return Call.get_or_none(Call.id == call_id)

    def failed_calls(self, stages: Iterable[Stage] = (Stage.FAILED,)) -> list[Call]:
        """Every call at one of `stages` (`failed`, by default), most recent first."""
        wanted = [stage.value for stage in stages]
        query = Call.select().where(Call.stage.in_(wanted)).order_by(Call.updated_at.desc(), Call.id.desc())
        return list(query)

    def set_aside_events(self, limit: int = 5) -> tuple[int, list[SeenEvent]]:
        """How many events were set aside (malformed, or quarantined), and the latest `limit`."""
        query = SeenEvent.select().where(SeenEvent.error.is_null(False))
        latest = query.order_by(SeenEvent.seen_at.desc(), SeenEvent.event_id).limit(limit)
        return query.count(), list(latest)

    def forget_unsent_render(self, call: Call) -> None:
        """For `retry`: a call whose own message Telegram accepted none of is rendered again
        (by today's renderer: a message an older release got wrong is not resent as it was);
        its rows with nothing accepted go. A message partly accepted is reopened instead, so
        only its rest is sent."""
        own = self.find_delivery(f"call:{call.id}")
        if own is None:
            return
        if json.loads(own.sent_ids_json):
            if own.done_at is not None and own.error is not None:
                self.update_delivery(own, done_at=None, error=None, attempts=0, next_attempt_at=0)
            return
        Delivery.delete().where(Delivery.call_id == call.id, Delivery.sent_ids_json == "[]").execute()

    def requeue(self, call: Call, stage: Stage, now: int) -> None:
        """Put a failed call back at `stage`, due now, with a fresh attempt count and 24 h."""
        self.update(call, now, stage=stage, attempts=0, next_attempt_at=now, retried_at=now)

    # --- personal data: retention and `forget` --------------------------------

    def calls_to_clear(self, before: int, limit: int) -> list[Call]:
        """Up to `limit` calls that happened before `before` and still hold personal data
        (not claimed by a worker now), oldest id first."""
        query = Call.select().where(
            Call.event_created_at < before, Call.personal_removed_at.is_null(), Call.claimed_by.is_null()
        )
        return list(query.order_by(Call.id).limit(limit))

    def calls_with_number(self, last10: Callable[[str | None], str], digits: str, forgotten_as: str) -> list[Call]:
        """Calls whose number's last 10 digits (`last10`) are `digits`, and calls cleared by an
        earlier `forget` of it (`forgotten_as`), oldest first. Numbers are stored as amoCRM
        wrote them, so they are compared here, not in SQL."""
        ids = [
            int(call_id)
            for call_id, phone in cast(
                Iterable[tuple[int, str]],
                Call.select(Call.id, Call.phone).where(Call.phone.is_null(False)).tuples().iterator(),
            )
            if last10(phone) == digits
        ]
        ids += [int(row.id) for row in Call.select(Call.id).where(Call.forgotten_as == forgotten_as)]
        found: list[Call] = []
        for start in range(0, len(ids), 500):
            found.extend(Call.select().where(Call.id.in_(ids[start : start + 500])))
        return sorted({call.id: call for call in found}.values(), key=lambda c: (c.event_created_at, c.id))

    def deliveries_of(self, call_ids: Iterable[int], *, lock: bool = False) -> list[Delivery]:
        """Every delivery row of `call_ids`, in the order they were stored (`lock`: see
        `_for_update`)."""
        ids = list(call_ids)
        rows: list[Delivery] = []
        for start in range(0, len(ids), 500):
            query = Delivery.select().where(Delivery.call_id.in_(ids[start : start + 500]))
            rows.extend(self._for_update(query) if lock else query)
        return sorted(rows, key=lambda row: row.id)

    def _for_update(self, query: peewee.ModelSelect[M]) -> peewee.ModelSelect[M]:
        """`query` locking the rows it reads until the transaction ends, for a read-then-write:
        PostgreSQL's READ COMMITTED lets another writer in between (`forget` beside the
        service's retention); SQLite's IMMEDIATE transaction already keeps every other out."""
        return query.for_update() if isinstance(self.db, peewee.PostgresqlDatabase) else query

    def clear_personal(
        self, calls: Iterable[Call], now: int, reason: str, *, forgotten_as: str | None = None
    ) -> tuple[int, int]:
        """Remove the personal data of `calls` in ONE transaction; returns (calls changed,
        delivery rows blanked).

        Gone: the transcript, the recording link and file name, the number, the entity's name,
        the analysis' quotes and paraphrases (`domain.without_personal_data`), and the content
        of every delivery row of the call; and, with `forgotten_as` (`forget`), the content of
        rows about no call in particular (a storm summary, a digest) that quote the number.
        Kept: ids, times, durations, manager, entity ids, scores, metrics, each row's sent ids
        and `done_at` (exactly-once holds: nothing is sent again). A row not sent yet is
        closed; a call not delivered yet becomes `skipped` with `reason`."""
        calls = list(calls)
        changed = blanked = 0
        cleared: list[int] = []
        with self.db.atomic():
            numbers = {str(call.phone) for call in calls if call.phone}
            for call in calls:
                fields: dict[str, Any] = {
                    "transcript": None,
                    "link": None,
                    "phone": None,
                    "entity_name": None,
                    "audio_path": None,
                    "outbox_json": None,
                    "analysis_json": without_personal_data(call.analysis_json),
                    "personal_removed_at": call.personal_removed_at or now,
                }
                if forgotten_as is not None:
                    fields["forgotten_as"] = forgotten_as
                if call.stage not in KEPT_STAGES:
                    fields |= {"stage": Stage.SKIPPED.value, "skip_reason": reason, "next_attempt_at": 0}
                # A worker that claimed the call meanwhile keeps it (`forget` names it and is run
                # again); one that has not yet cannot claim it once it is skipped.
                if not Call.update(**fields).where(Call.id == call.id, Call.claimed_by.is_null()).execute():
                    continue
                cleared.append(call.id)
                changed += any(getattr(call, name) != value for name, value in fields.items())
                for name, value in fields.items():
                    setattr(call, name, value)
                bi.rewrite_facts(call)  # its quotes, objections and next step go from the BI tables too
            blanked += self._blank(self.deliveries_of(cleared, lock=True), now, reason)
            for number in numbers if forgotten_as is not None else ():
                quoting = Delivery.select().where(
                    Delivery.call_id.is_null(), Delivery.payload_json.contains(number), Delivery.removed_at.is_null()
                )
                blanked += self._blank(list(self._for_update(quoting)), now, reason)
        return changed, blanked

    def clear_unlinked_before(self, before: int, now: int, limit: int) -> int:
        """Blank up to `limit` rows about no call in particular (digests, storm summaries,
        notices) stored before `before`; returns how many."""
        query = Delivery.select().where(
            Delivery.call_id.is_null(), Delivery.created_at < before, Delivery.removed_at.is_null()
        )
        with self.db.atomic():
            rows = self._for_update(query.order_by(Delivery.id).limit(limit))
            return self._blank(list(rows), now, "personal data removed")

    def _blank(self, rows: Iterable[Delivery], now: int, reason: str) -> int:
        blanked = 0
        for row in rows:
            if row.removed_at is not None:
                continue
            payload = json.loads(row.payload_json)
            empty: dict[str, Any] = (
                {"path": payload.get("path"), "body": []} if "path" in payload else {"parts": []}
            ) | {"deleted": payload.get("deleted", []), "refused": payload.get("refused", [])}
            fields: dict[str, Any] = {"payload_json": json.dumps(empty), "removed_at": now}
            if row.done_at is None:  # never sent now: closed, so no lane picks it up again
                fields |= {"done_at": now, "error": f"not sent: {reason}"}
            self.update_delivery(row, **fields)
            blanked += 1
        return blanked

    def record_deletions(self, row: Delivery, deleted: Iterable[int] = (), refused: Iterable[int] = ()) -> None:
        """Note in `row` which of its messages Telegram deleted, and which it refused to delete
        for good, so neither is tried again; the row is read again first (it may have been
        blanked since `row` was read)."""
        with self.db.atomic():
            fresh = self._for_update(Delivery.select().where(Delivery.id == row.id)).get()
            payload = json.loads(fresh.payload_json)
            payload["deleted"] = sorted(set(payload.get("deleted", [])) | set(deleted))
            payload["refused"] = sorted(set(payload.get("refused", [])) | set(refused))
            self.update_delivery(fresh, payload_json=json.dumps(payload))
        row.payload_json = fresh.payload_json

    def cleared_calls(self) -> int:
        """Calls whose personal data was removed (retention or `forget`)."""
        return int(Call.select().where(Call.personal_removed_at.is_null(False)).count())
