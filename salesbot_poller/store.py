"""The durable store (peewee): cursor and small state, seen events, one row per call.

Contract:
- `Store.open(url)` connects (SQLite: WAL, busy timeout, IMMEDIATE transactions), creates
  the SQLite file's directory, and applies pending migrations in a transaction.
- `record_window` stores a window's events and advances the cursor in ONE transaction:
  the cursor never passes an event that is not durably recorded.
- `update(call, **fields)` commits at once; the pipeline calls it after each stage, so a
  restart resumes from the last committed stage.
- A database error propagates. It is never read as "already processed".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import peewee
from playhouse.db_url import connect
from playhouse.migrate import SchemaMigrator, migrate

from salesbot_poller.domain import TERMINAL_STAGES, CallEvent, Stage

log = logging.getLogger(__name__)

database_proxy = peewee.DatabaseProxy()


class _Model(peewee.Model):
    class Meta:
        database = database_proxy


class Migration(_Model):
    name = peewee.CharField(primary_key=True)
    applied_at = peewee.IntegerField()


class State(_Model):
    key = peewee.CharField(primary_key=True)
    value = peewee.TextField()


class SeenEvent(_Model):
    event_id = peewee.CharField(primary_key=True)
    created_at = peewee.IntegerField(null=True)
    seen_at = peewee.IntegerField()
    error = peewee.TextField(null=True)  # why a malformed event could not become a call


class Call(_Model):
    id = peewee.AutoField()
    event_id = peewee.CharField(unique=True)
    direction = peewee.CharField()  # in / out
    entity_type = peewee.CharField()  # plural
    entity_id = peewee.IntegerField()
    note_id = peewee.IntegerField()
    event_created_at = peewee.IntegerField()
    first_seen_at = peewee.IntegerField()
    updated_at = peewee.IntegerField()
    stage = peewee.CharField(index=True, default=Stage.NEW.value)
    kind = peewee.CharField(null=True)  # conversation / missed, once the note is read
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.IntegerField(default=0, index=True)
    last_error = peewee.TextField(null=True)
    skip_reason = peewee.TextField(null=True)
    # From the note, and names resolved when it was read.
    duration = peewee.IntegerField(null=True)
    phone = peewee.CharField(null=True)
    link = peewee.TextField(null=True)
    call_status = peewee.IntegerField(null=True)
    source = peewee.CharField(null=True)
    responsible_user_id = peewee.IntegerField(null=True)
    manager_name = peewee.CharField(null=True)
    entity_name = peewee.CharField(null=True)
    # Stage artifacts.
    audio_path = peewee.TextField(null=True)
    transcript = peewee.TextField(null=True)
    analysis_json = peewee.TextField(null=True)
    outbox_json = peewee.TextField(null=True)  # rendered message parts, fixed before sending
    message_ids_json = peewee.TextField(null=True)  # ids of the parts Telegram accepted
    notified_at = peewee.IntegerField(null=True)
    # Where the call's own message went (None: telegram.chat_id), and the outgoing call that
    # returned a missed one (0006_delivery).
    chat_id = peewee.CharField(null=True)
    thread_id = peewee.IntegerField(null=True)
    callback_call_id = peewee.IntegerField(null=True)
    metrics_json = peewee.TextField(null=True)  # domain.ConversationMetrics, when roles are known
    retried_at = peewee.IntegerField(null=True)  # `retry` put it back: its 24 h restart here

    @property
    def message_ids(self) -> list[int]:
        return list(json.loads(self.message_ids_json or "[]"))

    @property
    def outbox(self) -> list[str]:
        return list(json.loads(self.outbox_json or "[]"))


class Delivery(_Model):
    """One message or amoCRM write besides a call's own message (a copy to the alert chat, the
    transcript, an escalation, a callback reply, the digest, a note, a task). Stored before it
    is sent; each accepted part's id committed right after (see `outbox`)."""

    id = peewee.AutoField()
    key = peewee.CharField(unique=True)  # what and where, e.g. "call:12:card:-1001:5"
    call_id = peewee.IntegerField(null=True, index=True)
    kind = peewee.CharField()
    chat_id = peewee.CharField(null=True)  # None: telegram.chat_id (amoCRM writes ignore it)
    thread_id = peewee.IntegerField(null=True)
    reply_to_key = peewee.CharField(null=True)  # "call:<id>" or another delivery's key
    payload_json = peewee.TextField()
    sent_ids_json = peewee.TextField(default="[]")
    created_at = peewee.IntegerField()
    done_at = peewee.IntegerField(null=True, index=True)
    error = peewee.TextField(null=True)  # why it was given up (a permanent refusal)


class Usage(_Model):
    """What one paid API request cost us in units: audio seconds sent, tokens in and out."""

    id = peewee.AutoField()
    call_id = peewee.IntegerField(null=True, index=True)
    at = peewee.IntegerField(index=True)  # unix time
    kind = peewee.CharField()  # "transcription" (analysis may record its tokens too)
    model = peewee.CharField()
    audio_seconds = peewee.FloatField(default=0)
    input_tokens = peewee.IntegerField(default=0)
    output_tokens = peewee.IntegerField(default=0)


def _m0001_initial(db: peewee.Database) -> None:
    db.create_tables([State, SeenEvent, Call])


def add_missing_columns(db: peewee.Database, model: type[peewee.Model], names: Iterable[str]) -> None:
    """Add the model's fields `names` to its table unless already there.

    A fresh database gets every current column from `0001_initial` (it creates the tables from
    today's models), so a later step that adds columns must skip the ones that exist: this is
    how every column-adding migration is written.
    """
    table = model._meta.table_name
    present = {column.name for column in db.get_columns(table)}
    migrator = SchemaMigrator.from_database(db)
    fields = model._meta.fields
    operations = [migrator.add_column(table, name, fields[name]) for name in names if name not in present]
    if operations:
        migrate(*operations)


def _m0004_retry(db: peewee.Database) -> None:
    add_missing_columns(db, Call, ["retried_at"])


def _m0005_audio_usage(db: peewee.Database) -> None:
    add_missing_columns(db, Call, ["metrics_json"])
    db.create_tables([Usage])


def _m0006_delivery(db: peewee.Database) -> None:
    add_missing_columns(db, Call, ["chat_id", "thread_id", "callback_call_id"])
    db.create_tables([Delivery])


# Ordered and append-only: a released step is never edited, only followed by a new one.
MIGRATIONS: list[tuple[str, Callable[[peewee.Database], None]]] = [
    ("0001_initial", _m0001_initial),
    ("0004_retry", _m0004_retry),
    ("0005_audio_usage", _m0005_audio_usage),
    ("0006_delivery", _m0006_delivery),
]

CURSOR_KEY = "events_cursor"


def sqlite_file(url: str) -> Path | None:
    """The database file of a `sqlite:` URL (four slashes: absolute); None otherwise."""
    if not url.startswith("sqlite:"):
        return None
    path = url.split("://", 1)[1].lstrip("/")
    if not path or path == ":memory:":
        return None
    return Path("/" + path if url.startswith("sqlite:////") else path)


def _open_database(url: str) -> peewee.Database:
    if url.startswith("sqlite:"):
        file = sqlite_file(url)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
        db: peewee.Database = connect(
            url,
            # synchronous=full: in WAL mode, "normal" may roll the last commits back after a power
            # loss (not after a process crash), and a lost commit of a transcript or a message id
            # means paying or posting twice. A few commits per call make the fsync cheap.
            pragmas={"journal_mode": "wal", "busy_timeout": 5000, "foreign_keys": 1, "synchronous": "full"},
        )
        return db
    db = connect(url)
    return db


class Store:
    """All reads and writes of the database. One instance per process."""

    def __init__(self, db: peewee.Database) -> None:
        self.db = db
        database_proxy.initialize(db)

    @classmethod
    def open(cls, url: str, now: int) -> Store:
        store = cls(_open_database(url))
        store.migrate(now)
        return store

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()

    def migrate(self, now: int) -> list[str]:
        """Apply pending migrations in order, each recorded in the `migration` table."""
        with self.db.atomic():
            self.db.create_tables([Migration])
            done = {m.name for m in Migration.select(Migration.name)}
            applied = []
            for name, step in MIGRATIONS:
                if name not in done:
                    step(self.db)
                    Migration.create(name=name, applied_at=now)
                    applied.append(name)
        if applied:
            log.info("database migrated: %s", ", ".join(applied))
        return applied

    # --- small state ---------------------------------------------------------------

    def get_state(self, key: str) -> str | None:
        row = State.get_or_none(State.key == key)
        return None if row is None else str(row.value)

    def set_state(self, key: str, value: str) -> None:
        State.insert(key=key, value=value).on_conflict_replace().execute()

    def cursor(self) -> int | None:
        value = self.get_state(CURSOR_KEY)
        return None if value is None else int(value)

    # --- events -----------------------------------------------------------------------

    def record_window(
        self, events: Iterable[CallEvent], malformed: Iterable[tuple[str, str]], until: int, now: int
    ) -> tuple[int, list[tuple[str, str]]]:
        """Record a window's events, new calls and the cursor atomically.

        Returns the number of new calls and the malformed events not seen before.
        """
        new_calls = 0
        new_malformed = []
        with self.db.atomic():
            for event in events:
                inserted = (
                    SeenEvent.insert(event_id=event.event_id, created_at=event.created_at, seen_at=now)
                    .on_conflict_ignore()
                    .as_rowcount()
                    .execute()
                )
                if inserted:
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
                    new_calls += 1
            for event_id, reason in malformed:
                query = SeenEvent.insert(event_id=event_id, seen_at=now, error=reason).on_conflict_ignore()
                if query.as_rowcount().execute():
                    new_malformed.append((event_id, reason))
            self.set_state(CURSOR_KEY, str(until))
        return new_calls, new_malformed

    # --- calls ------------------------------------------------------------------------

    def due_calls(self, now: int, stages: Iterable[Stage] | None = None) -> list[Call]:
        """Unfinished calls whose next attempt is due, oldest first."""
        wanted = [s.value for s in (stages or [s for s in Stage if s not in TERMINAL_STAGES])]
        query = Call.select().where(Call.stage.in_(wanted), Call.next_attempt_at <= now).order_by(Call.id)
        return list(query)

    def update(self, call: Call, now: int, **fields: Any) -> None:
        """Commit `fields` of `call` (and mirror them on the instance)."""
        fields["updated_at"] = now
        for key, value in fields.items():
            if isinstance(value, Stage):
                fields[key] = value.value
        Call.update(**fields).where(Call.id == call.id).execute()
        for key, value in fields.items():
            setattr(call, key, value)

    def stage_counts(self) -> dict[str, int]:
        query = Call.select(Call.stage, peewee.fn.COUNT(Call.id)).group_by(Call.stage).tuples()
        rows = cast(Iterable[tuple[str, int]], query)  # .tuples() rows, not Call instances
        return {str(stage): int(count) for stage, count in rows}

    def recent_errors(self, limit: int = 5) -> list[Call]:
        query = (
            Call.select()
            .where(Call.last_error.is_null(False))
            .order_by(Call.updated_at.desc(), Call.id.desc())
            .limit(limit)
        )
        return list(query)

    # --- failures and retry (issue 4) ---------------------------------------------------

    def find_call(self, call_id: int) -> Call | None:
        return Call.get_or_none(Call.id == call_id)

    def failed_calls(self) -> list[Call]:
        """Every `failed` call, most recent failure first."""
        query = Call.select().where(Call.stage == Stage.FAILED.value).order_by(Call.updated_at.desc(), Call.id.desc())
        return list(query)

    def requeue(self, call: Call, stage: Stage, now: int) -> None:
        """Put a failed call back at `stage`, due now, with a fresh attempt count and 24 h."""
        self.update(call, now, stage=stage, attempts=0, next_attempt_at=now, retried_at=now)
