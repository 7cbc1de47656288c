"""Schema migrations: ordered and append-only; each step is applied once, in a transaction,
and recorded in the `migration` table (`Store.migrate`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import peewee
from playhouse.migrate import SchemaMigrator, migrate

from salesbot_poller.domain import Stage
from salesbot_poller.store import bi, search, tally
from salesbot_poller.store.models import (
    BI_MODELS,
    CORRECTION_MODELS,
    QUERY_INDEXES,
    TRACKER_MODELS,
    BiCall,
    BiRubricItem,
    Call,
    Clip,
    Delivery,
    SeenEvent,
    State,
    UploadHold,
    Usage,
)


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


def _m0007_lanes(db: peewee.Database) -> None:
    """Claims for the work lane; each call's own message becomes a `Delivery` row (key
    `call:<id>`), with the parts already accepted, so a call left mid-send resumes there."""
    add_missing_columns(db, Call, ["claimed_by", "claimed_at"])
    # Only columns this step's release had: the models' later columns (call.summarised_in,
    # delivery.attempts, ...) are added by later steps, and a model select or insert names
    # them all, which failed the upgrade of any database from before this step.
    rows = Call.select(
        Call.id,
        Call.stage,
        Call.kind,
        Call.chat_id,
        Call.thread_id,
        Call.outbox_json,
        Call.message_ids_json,
        Call.updated_at,
        Call.notified_at,
    ).where(Call.outbox_json.is_null(False))
    table = Delivery._meta.table_name
    present = {column.name for column in db.get_columns(table)}
    # The model's defaults of the columns the table has (0006_delivery made it from the
    # model of its day, or of today): a table insert adds none by itself.
    defaults = {
        name: field.default
        for name, field in Delivery._meta.fields.items()
        if name in present and field.default is not None
    }
    delivery = peewee.Table(table).bind(db)
    for call in rows:
        done = call.stage in (Stage.NOTIFIED.value, Stage.MISSED_ALERTED.value)
        row = defaults | {
            "key": f"call:{call.id}",
            "call_id": call.id,
            "kind": "alert" if call.kind == "missed" else "card",
            "chat_id": call.chat_id,
            "thread_id": call.thread_id,
            "payload_json": json.dumps({"parts": json.loads(call.outbox_json or "[]")}, ensure_ascii=False),
            "sent_ids_json": call.message_ids_json or "[]",
            "created_at": call.updated_at,
            "done_at": (call.notified_at or call.updated_at) if done else None,
        }
        delivery.insert(**row).on_conflict_ignore().execute()


def _m0008_delivery_retry(db: peewee.Database) -> None:
    """Each destination of a call is retried on its own schedule."""
    add_missing_columns(db, Delivery, ["attempts", "next_attempt_at"])


def _m0009_storm(db: peewee.Database) -> None:
    add_missing_columns(db, Call, ["summarised_in"])


def _m0010_event_raw(db: peewee.Database) -> None:
    """A set-aside event keeps its raw form, so `retry --event` can take it back."""
    add_missing_columns(db, SeenEvent, ["raw_json"])


def _m0011_retention(db: peewee.Database) -> None:
    """Personal data removed after `storage.retention_days`, or by `forget`."""
    add_missing_columns(db, Call, ["personal_removed_at", "forgotten_as"])
    add_missing_columns(db, Delivery, ["removed_at"])
    # Fresh databases have these from the models already (0001_initial creates today's tables).
    table = Call._meta.table_name
    indexed = {tuple(index.columns) for index in db.get_indexes(table)}
    migrator = SchemaMigrator.from_database(db)
    wanted = [(column,) for column in ("event_created_at", "forgotten_as") if (column,) not in indexed]
    if wanted:
        migrate(*(migrator.add_index(table, columns) for columns in wanted))


def _m0012_call_search(db: peewee.Database) -> None:
    """`/find`: the transcripts' full-text index on SQLite (`store.search`)."""
    search.create_index(db)


def _m0013_bi(db: peewee.Database) -> None:
    """The BI tables (docs/bi.md), filled for the calls analysed before."""
    db.create_tables(list(BI_MODELS))
    bi.backfill()


# amoCRM's integers, admitted by the parser up to 2^63 - 1 (`amocrm_parse.MAX_ID`).
BIG_COLUMNS: dict[type[peewee.Model], tuple[str, ...]] = {
    Call: ("entity_id", "note_id", "responsible_user_id", "event_created_at"),
    SeenEvent: ("created_at",),
}


def _m0014_big_ids(db: peewee.Database) -> None:
    """amoCRM's ids (and times) past 2^31 fit: SQLite's INTEGER is 64-bit already, so only
    PostgreSQL columns made as INTEGER (4 bytes) by an earlier release are widened to BIGINT."""
    if not isinstance(db, peewee.PostgresqlDatabase):
        return
    migrator = SchemaMigrator.from_database(db)
    operations = []
    for model, names in BIG_COLUMNS.items():
        table = model._meta.table_name
        narrow = {column.name for column in db.get_columns(table) if column.data_type == "integer"}
        fields = model._meta.fields
        operations += [migrator.alter_column_type(table, name, fields[name]) for name in names if name in narrow]
    if operations:
        migrate(*operations)


def _m0015_profile(db: peewee.Database) -> None:
    """Each call keeps the profile it was given."""
    add_missing_columns(db, Call, ["profile"])


def _m0016_upload_holds(db: peewee.Database) -> None:
    """The daily budget is reserved per upload in the database (every worker and process sees
    the others' reservations); a call keeps where its recording was cut."""
    db.create_tables([UploadHold])
    add_missing_columns(db, Call, ["cut_minutes"])


def _m0017_delivery_claims(db: peewee.Database) -> None:
    """Delivery rows are claimed before they are sent, as calls are: one sender per row."""
    add_missing_columns(db, Delivery, ["claimed_by", "claimed_at"])


def _m0018_trackers(db: peewee.Database) -> None:
    """Tracker hits and misses per call (`bi_tracker_hit`, `bi_tracker_missing`) and their
    counts on `bi_call`; calls transcribed before get them from `trackers --apply`."""
    db.create_tables(list(TRACKER_MODELS))
    add_missing_columns(db, BiCall, ["tracker_hits", "tracker_missing"])


def _m0019_topics(db: peewee.Database) -> None:
    """Each analysed call's topic in the BI tables, and whether it is a name of the closed
    list (`analysis.topics`); a free topic no longer survives the removal of personal data."""
    add_missing_columns(db, BiCall, ["topic", "topic_closed"])
    bi.backfill_topics()


def _m0020_query_indexes(db: peewee.Database) -> None:
    """Every per-cycle and per-command read served by an index, however long the history
    (`models.QUERY_INDEXES`); the calls counted as they are written (`store.tally`, for
    `status`); PostgreSQL's text search index for `/find` (`store.search`). The index on
    `call.stage` alone goes: `stage, event_created_at` serves what it served."""
    for index in QUERY_INDEXES:
        db.execute_sql(*db.get_sql_context().sql(index).query())  # type: ignore[no-untyped-call]
    db.execute_sql('DROP INDEX IF EXISTS "call_stage"')  # type: ignore[no-untyped-call]
    tally.create(db)
    search.create_postgres_index(db)


def _m0021_corrections(db: peewee.Database) -> None:
    """People's verdicts beside the model's (`verdict_correction`), the button presses already
    handled (`handled_callback`), and their columns in the BI tables; `score_corrected` of the
    calls analysed before is their score (nobody corrected them)."""
    db.create_tables(list(CORRECTION_MODELS))
    add_missing_columns(db, BiRubricItem, ["human_verdict", "corrected_by", "corrected_at"])
    add_missing_columns(db, BiCall, ["score_corrected"])
    peewee.Table(BiCall._meta.table_name).bind(db).update(score_corrected=peewee.SQL("score")).where(
        peewee.SQL("score_corrected IS NULL")
    ).execute()


def _m0023_retention_keyset(db: peewee.Database) -> None:
    """Retention's reads at any history (`PersonalData.calls_to_clear`): what still holds
    personal data, by event time, in partial indexes a cleared call or blanked row leaves.
    On SQLite each starts with the columns its condition holds NULL, so the planner prefers
    it (more constrained columns) to `call_event_created_at` or `delivery_call_id` whatever
    its statistics say; PostgreSQL's start with the time, so the keyset's row comparison is
    the index condition."""
    sqlite = isinstance(db, peewee.SqliteDatabase)
    db.execute_sql(  # type: ignore[no-untyped-call]
        'CREATE INDEX IF NOT EXISTS "call_retention_due" ON "call" '
        f"({'personal_removed_at, ' if sqlite else ''}event_created_at, id) WHERE personal_removed_at IS NULL"
    )
    db.execute_sql(  # type: ignore[no-untyped-call]
        'CREATE INDEX IF NOT EXISTS "delivery_retention_due" ON "delivery" '
        f"({'call_id, removed_at, ' if sqlite else ''}created_at, id) WHERE call_id IS NULL AND removed_at IS NULL"
    )


def _m0022_clips(db: peewee.Database) -> None:
    """The Telegram file id of every quote clip sent, so a clip is never cut twice."""
    db.create_tables([Clip])


def _m0024_phone_key(db: peewee.Database) -> None:
    """Each call's number in its normal form (`call.phone_key`): `calls_with_number` reads one
    key's calls in `call_phone_key`, and `fill_phone_keys` walks by id the calls whose key is
    not computed yet (every call stored before this step) in `call_phone_unkeyed`, which a
    call leaves once keyed (empty after the first look-up). The keys are not computed here:
    the store does not parse numbers (`phones` is not its to import). SQLite's index starts
    with the column its condition holds NULL, so the planner prefers it to the rowid whatever
    its statistics say (as 0023's); PostgreSQL's orders the keyset by id alone."""
    add_missing_columns(db, Call, ["phone_key"])
    sqlite = isinstance(db, peewee.SqliteDatabase)
    db.execute_sql(  # type: ignore[no-untyped-call]
        'CREATE INDEX IF NOT EXISTS "call_phone_key" ON "call" (phone_key) WHERE phone_key IS NOT NULL'
    )
    db.execute_sql(  # type: ignore[no-untyped-call]
        'CREATE INDEX IF NOT EXISTS "call_phone_unkeyed" ON "call" '
        f"({'phone_key, ' if sqlite else ''}id) WHERE phone_key IS NULL AND phone IS NOT NULL"
    )


# Ordered and append-only: a released step is never edited, only followed by a new one.
MIGRATIONS: list[tuple[str, Callable[[peewee.Database], None]]] = [
    ("0001_initial", _m0001_initial),
    ("0004_retry", _m0004_retry),
    ("0005_audio_usage", _m0005_audio_usage),
    ("0006_delivery", _m0006_delivery),
    ("0007_lanes", _m0007_lanes),
    ("0008_delivery_retry", _m0008_delivery_retry),
    ("0009_storm", _m0009_storm),
    ("0010_event_raw", _m0010_event_raw),
    ("0011_retention", _m0011_retention),
    ("0012_call_search", _m0012_call_search),
    ("0013_bi", _m0013_bi),
    ("0014_big_ids", _m0014_big_ids),
    ("0015_profile", _m0015_profile),
    ("0016_upload_holds", _m0016_upload_holds),
    ("0017_delivery_claims", _m0017_delivery_claims),
    ("0018_trackers", _m0018_trackers),
    ("0019_topics", _m0019_topics),
    ("0020_query_indexes", _m0020_query_indexes),
    ("0021_corrections", _m0021_corrections),
    ("0022_clips", _m0022_clips),
    ("0023_retention_keyset", _m0023_retention_keyset),
    ("0024_phone_key", _m0024_phone_key),
]
