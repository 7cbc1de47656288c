"""Every migration, on SQLite and on PostgreSQL: a fresh database gets them all once, and a
database left by any earlier release, holding rows, is upgraded one step at a time and ends
with the schema a fresh database gets, its rows kept.

A release's schema is made from today's (`0001_initial` creates today's tables) by taking
away what each later step added, as `HISTORY` lists it. A step appended later needs an entry
here to be tested from the schema before it; without one it still runs on every upgraded
database, and the final schema is still compared with a fresh one's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import peewee
import pytest

from salesbot_poller.store import MIGRATIONS, Call, Delivery, Migration, SeenEvent, Store, search, tally
from salesbot_poller.store.migrations import BIG_COLUMNS
from salesbot_poller.store.models import QUERY_INDEXES

pytestmark = pytest.mark.postgres  # each test runs against SQLite and against PostgreSQL


@dataclass(frozen=True)
class Added:
    """What one step added to the schema."""

    tables: tuple[str, ...] = ()
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    indexes: dict[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)
    widened: bool = False  # PostgreSQL: amoCRM's columns became BIGINT (`BIG_COLUMNS`)
    index_names: tuple[str, ...] = ()  # indexes made by name (partial, or on an expression)
    undo: Callable[[peewee.Database], None] | None = None  # what else takes the step back


def _before_query_indexes(db: peewee.Database) -> None:
    """Before 0020_query_indexes: no tally, and `call.stage` indexed alone."""
    tally.drop(db)
    db.execute_sql('CREATE INDEX IF NOT EXISTS "call_stage" ON "call" ("stage")')


HISTORY = {
    "0004_retry": Added(columns={"call": ("retried_at",)}),
    "0005_audio_usage": Added(tables=("usage",), columns={"call": ("metrics_json",)}),
    "0006_delivery": Added(tables=("delivery",), columns={"call": ("chat_id", "thread_id", "callback_call_id")}),
    "0007_lanes": Added(columns={"call": ("claimed_by", "claimed_at")}),
    "0008_delivery_retry": Added(columns={"delivery": ("attempts", "next_attempt_at")}),
    "0009_storm": Added(columns={"call": ("summarised_in",)}),
    "0010_event_raw": Added(columns={"seenevent": ("raw_json",)}),
    "0011_retention": Added(
        columns={"call": ("personal_removed_at", "forgotten_as"), "delivery": ("removed_at",)},
        indexes={"call": (("event_created_at",), ("forgotten_as",))},
    ),
    # 0012_call_search (an FTS5 index kept by triggers, SQLite only) has no entry: it is made
    # with IF NOT EXISTS, so it is applied again to every upgraded database as it stands.
    "0013_bi": Added(tables=("bi_call", "bi_rubric_item", "bi_objection")),
    "0014_big_ids": Added(widened=True),
    "0015_profile": Added(columns={"call": ("profile",)}),
    "0018_trackers": Added(
        tables=("bi_tracker_hit", "bi_tracker_missing"), columns={"bi_call": ("tracker_hits", "tracker_missing")}
    ),
    "0019_topics": Added(columns={"bi_call": ("topic", "topic_closed")}),
    "0020_query_indexes": Added(
        index_names=(*(index._name for index in QUERY_INDEXES), search.PG_INDEX), undo=_before_query_indexes
    ),
    "0021_corrections": Added(
        tables=("verdict_correction", "handled_callback"),
        columns={"bi_rubric_item": ("human_verdict", "corrected_by", "corrected_at"), "bi_call": ("score_corrected",)},
    ),
    # Partial indexes; SQLite's start with the columns they hold NULL (see the migration).
    "0023_retention_keyset": Added(
        indexes={
            "call": (("event_created_at", "id"), ("personal_removed_at", "event_created_at", "id")),
            "delivery": (("created_at", "id"), ("call_id", "removed_at", "created_at", "id")),
        }
    ),
    "0022_clips": Added(tables=("clip",)),
    "0024_phone_key": Added(columns={"call": ("phone_key",)}, index_names=("call_phone_key", "call_phone_unkeyed")),
}
NAMES = [name for name, _ in MIGRATIONS]
BIG = 2**40  # an amoCRM id past 2^31


def schema(db: peewee.Database) -> dict[str, Any]:
    """Each table's columns (type, nullable, primary key) and indexes (columns, unique)."""
    return {
        table: (
            {c.name: (c.data_type.lower(), c.null, c.primary_key) for c in db.get_columns(table)},
            sorted((tuple(i.columns), i.unique) for i in db.get_indexes(table)),
        )
        for table in sorted(db.get_tables())
    }


def back_to(store: Store, release: str) -> None:
    """Turn a fresh database into one that the release whose last step was `release` left."""
    db = store.db
    later = [HISTORY[name] for name in NAMES[NAMES.index(release) + 1 :] if name in HISTORY]
    dropped = {table for added in later for table in added.tables}
    for added in later:
        for name in added.index_names:
            db.execute_sql(f'DROP INDEX IF EXISTS "{name}"')
        if added.undo is not None:
            added.undo(db)
    for added in later:
        for table, indexed in added.indexes.items():
            for index in db.get_indexes(table) if table not in dropped else ():
                if tuple(index.columns) in indexed:
                    db.execute_sql(f'DROP INDEX "{index.name}"')
    for table in dropped:
        db.execute_sql(f'DROP TABLE "{table}"')
    for added in later:
        for table, columns in added.columns.items():
            for column in columns if table not in dropped else ():
                db.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
        if added.widened and isinstance(db, peewee.PostgresqlDatabase):
            for model, columns in BIG_COLUMNS.items():
                for column in columns:
                    db.execute_sql(f'ALTER TABLE "{model._meta.table_name}" ALTER COLUMN "{column}" TYPE INTEGER')
    Migration.delete().where(Migration.name.not_in(NAMES[: NAMES.index(release) + 1])).execute()


def test_a_fresh_database_gets_every_migration_once(database_url: str) -> None:
    store = Store.open(database_url, 1)
    try:
        assert [m.name for m in Migration.select().order_by(Migration.applied_at, Migration.name)] == sorted(
            name for name, _ in MIGRATIONS
        )
        assert store.missing_migrations() == []
        assert store.migrate(2) == [], "applied migrations are not applied again"
    finally:
        store.close()


@pytest.mark.parametrize("release", NAMES[:-1])
def test_a_database_of_each_release_is_upgraded_step_by_step(database_url: str, release: str) -> None:
    store = Store.open(database_url, 1)
    try:
        fresh = schema(store.db)
        back_to(store, release)
        pending = NAMES[NAMES.index(release) + 1 :]
        assert store.missing_migrations() == pending
        # A call of that release; before 0007_lanes its card's parts and ids lived on the call.
        Call.insert(
            event_id="01OLD",
            direction="in",
            entity_type="leads",
            entity_id=7001,
            note_id=101,
            event_created_at=1_700_000_000,
            first_seen_at=1_700_000_010,
            updated_at=1_700_000_020,
            stage="notified",
            kind="conversation",
            outbox_json=json.dumps(["part one", "part two"]),
            message_ids_json="[11, 12]",
            notified_at=1_700_000_030,
        ).execute()
        SeenEvent.insert(event_id="01OLD", created_at=1_700_000_000, seen_at=1_700_000_010).execute()

        for name in pending:
            assert store.migrate(100, upto=name) == [name], f"{name} is applied alone, in its turn"
        assert store.missing_migrations() == []
        assert schema(store.db) == fresh, "the upgraded schema is a fresh database's"

        (call,) = Call.select()
        assert (call.event_id, call.entity_id, call.stage) == ("01OLD", 7001, "notified")
        assert store.stage_counts() == {"notified": 1}, "the calls stored before are counted (0020_query_indexes)"
        if "0007_lanes" in pending:  # the card moved out of the call
            (card,) = Delivery.select()
            assert (card.key, card.kind, card.sent_ids_json, card.done_at) == (
                "call:1",
                "card",
                "[11, 12]",
                1_700_000_030,
            )
            assert json.loads(card.payload_json) == {"parts": ["part one", "part two"]}
    finally:
        store.close()


def test_amocrm_ids_past_two_to_the_31_are_stored_and_read_back(database_url: str) -> None:
    store = Store.open(database_url, 1)
    try:
        Call.insert(
            event_id="01BIG",
            direction="out",
            entity_type="contacts",
            entity_id=BIG + 1,
            note_id=BIG + 2,
            responsible_user_id=BIG + 3,
            event_created_at=BIG + 4,
            first_seen_at=1,
            updated_at=1,
        ).execute()
        SeenEvent.insert(event_id="01BIG", created_at=2**63 - 1, seen_at=1).execute()
        call = Call.get(Call.event_id == "01BIG")
        assert (call.entity_id, call.note_id, call.responsible_user_id, call.event_created_at) == (
            BIG + 1,
            BIG + 2,
            BIG + 3,
            BIG + 4,
        )
        assert SeenEvent.get_by_id("01BIG").created_at == 2**63 - 1
    finally:
        store.close()
