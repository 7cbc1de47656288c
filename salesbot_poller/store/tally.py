"""The calls counted as they are written (`call_tally`): what `status` and `fleet` show
without reading a million calls.

Contract:
- `create(db)` (migration `0020_query_indexes`) makes the triggers that keep `call_tally` in
  step with `call`, and fills it from the calls stored so far, in the migration's
  transaction. From then on every insert, delete and change of a call's stage, profile or
  `personal_removed_at` moves its count in the transaction of that write, whatever code path
  wrote it: the tally never disagrees with the table.
- A row per (profile, stage, cleared): `profile` is "" for a call not given one (NULL), and
  `cleared` says whether its personal data is gone. A count may reach 0; rows are never
  deleted (a handful of them, at most profiles x stages x 2).
- PostgreSQL: a call that changes counts takes its two rows' locks in the rows' order
  (the row it leaves and the row it joins), so two writers moving calls in opposite
  directions between the same two stages never deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import peewee

from salesbot_poller.store.models import Call, CallTally

TABLE = CallTally._meta.table_name
_CALL = Call._meta.table_name
_KEY = "(profile, stage, cleared)"
_WATCHED = "stage, profile, personal_removed_at"


def _changed(old: str, new: str, distinct: str) -> str:
    """The trigger's condition: the call moved to another row of the tally."""
    return (
        f"{old}.stage {distinct} {new}.stage OR coalesce({old}.profile, '') <> coalesce({new}.profile, '') "
        f"OR ({old}.personal_removed_at IS NULL) <> ({new}.personal_removed_at IS NULL)"
    )


def _key(row: str) -> str:
    return f"coalesce({row}.profile, ''), {row}.stage, {row}.personal_removed_at IS NOT NULL"


def _where(row: str) -> str:
    return (
        f"profile = coalesce({row}.profile, '') AND stage = {row}.stage "
        f"AND cleared = ({row}.personal_removed_at IS NOT NULL)"
    )


def _add(row: str) -> str:
    return (
        f"INSERT INTO {TABLE} {_KEY[:-1]}, calls) VALUES ({_key(row)}, 1) "
        f"ON CONFLICT {_KEY} DO UPDATE SET calls = {TABLE}.calls + 1;"
    )


def _take(row: str) -> str:
    return f"UPDATE {TABLE} SET calls = calls - 1 WHERE {_where(row)};"


SQLITE_DDL = (
    f"CREATE TRIGGER IF NOT EXISTS {TABLE}_insert AFTER INSERT ON {_CALL} BEGIN {_add('new')} END",
    f"CREATE TRIGGER IF NOT EXISTS {TABLE}_delete AFTER DELETE ON {_CALL} BEGIN {_take('old')} END",
    f"CREATE TRIGGER IF NOT EXISTS {TABLE}_update AFTER UPDATE OF {_WATCHED} ON {_CALL} "
    f"WHEN {_changed('old', 'new', 'IS NOT')} BEGIN {_take('old')} {_add('new')} END",
)

# One function for the three events; the two rows of a move are locked in key order.
POSTGRES_DDL = (
    f"""CREATE OR REPLACE FUNCTION {TABLE}_count() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        {_add("NEW")}
      ELSIF TG_OP = 'DELETE' THEN
        {_take("OLD")}
      ELSIF ROW({_key("OLD")}) < ROW({_key("NEW")}) THEN
        {_take("OLD")}
        {_add("NEW")}
      ELSE
        {_add("NEW")}
        {_take("OLD")}
      END IF;
      RETURN NULL;
    END $$""",
    f"DROP TRIGGER IF EXISTS {TABLE}_insert_delete ON {_CALL}",
    f"""CREATE TRIGGER {TABLE}_insert_delete AFTER INSERT OR DELETE ON {_CALL}
    FOR EACH ROW EXECUTE PROCEDURE {TABLE}_count()""",
    f"DROP TRIGGER IF EXISTS {TABLE}_update ON {_CALL}",
    f"""CREATE TRIGGER {TABLE}_update AFTER UPDATE OF {_WATCHED} ON {_CALL}
    FOR EACH ROW WHEN ({_changed("OLD", "NEW", "IS DISTINCT FROM")}) EXECUTE PROCEDURE {TABLE}_count()""",
)


def create(db: peewee.Database) -> None:
    """The table, its triggers and its counts of the calls stored so far (see the contract)."""
    db.create_tables([CallTally])
    statements = POSTGRES_DDL if isinstance(db, peewee.PostgresqlDatabase) else SQLITE_DDL
    for statement in statements:
        db.execute_sql(statement)  # type: ignore[no-untyped-call]
    CallTally.delete().execute()
    cleared = Call.personal_removed_at.is_null(False)
    profile = peewee.fn.COALESCE(Call.profile, "")
    counted = Call.select(profile, Call.stage, cleared, peewee.fn.COUNT(Call.id)).group_by(profile, Call.stage, cleared)
    CallTally.insert_from(counted, [CallTally.profile, CallTally.stage, CallTally.cleared, CallTally.calls]).execute()


def counts() -> list[tuple[str, str, bool, int]]:
    """Every row of the tally: (profile, stage, cleared, calls), those with calls."""
    query = CallTally.select(CallTally.profile, CallTally.stage, CallTally.cleared, CallTally.calls).where(
        CallTally.calls > 0
    )
    rows = cast(Iterable[tuple[str, str, object, int]], query.tuples())  # .tuples() rows, not models
    return [(str(p), str(s), bool(c), int(n)) for p, s, c, n in rows]


def drop(db: peewee.Database) -> None:
    """The tally, its triggers (and PostgreSQL's function) gone: a database as before
    `0020_query_indexes` (the migration test makes one so)."""
    postgres = isinstance(db, peewee.PostgresqlDatabase)
    for name in (f"{TABLE}_insert_delete", f"{TABLE}_insert", f"{TABLE}_delete", f"{TABLE}_update"):
        db.execute_sql(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {_CALL}" if postgres else ""))  # type: ignore[no-untyped-call]
    if postgres:
        db.execute_sql(f"DROP FUNCTION IF EXISTS {TABLE}_count()")  # type: ignore[no-untyped-call]
    db.drop_tables([CallTally])
