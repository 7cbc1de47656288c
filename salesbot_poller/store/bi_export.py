"""The export's read of the BI tables: analysed calls a page at a time, as plain rows.

Contract:
- `export_pages(db, start, end, item_fields, page)` yields the analysed calls that happened in
  [start, end), oldest first, `page` calls at a time (`ExportPage`), by keyset: each page
  starts in the index (started_at, call_id) after the last row of the one before (no OFFSET,
  no server-side cursor), so a page costs the same at the end of a long period as at its start.
- A page holds, for its calls only (one query each, keyed by call id):
  `facts`: one tuple per call of `FACT_FIELDS`, in that order;
  `items[call_id]`: the call's rubric items in rubric order, each a tuple of its call id then
  `item_fields` (names of `bi.ITEM_FIELDS`: a CSV asks for the verdicts only, JSON Lines for
  everything); `objections[call_id]`: (call id, objection, handling) in order;
  `hits[call_id]`: {tracker name: hits in the call} for the trackers it has hits of.
- Why tuples: an export of a long history spends its time in Python, not in the database;
  a peewee model per row (and per item) cost more than everything else together. The SQL is
  still built by peewee (the same text on SQLite and PostgreSQL); only the rows are read
  from the cursor as the driver returns them. Values are what the models would give, except
  `verified`, which SQLite returns as 0/1 (the reader makes it a bool: `as_bool`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Any

import peewee

from salesbot_poller.store.models import BiCall, BiObjection, BiRubricItem, TrackerHit

PAGE = 500  # calls per page: memory holds no more; also the size of each IN (...) list
# A fact row: the export's columns in its order, then the expected trackers not said.
FACT_FIELDS = (
    "call_id",
    "started_at",
    "manager_id",
    "manager",
    "entity_type",
    "entity_id",
    "direction",
    "duration",
    "score",
    "profile",
    "topic",
    "next_step_action",
    "next_step_due",
    "analysed_at",
    "tracker_missing",
)


@dataclass
class ExportPage:
    """One page of `export_pages` (see the module contract)."""

    facts: list[tuple[Any, ...]]
    items: dict[int, list[tuple[Any, ...]]] = field(default_factory=dict)
    objections: dict[int, list[tuple[Any, ...]]] = field(default_factory=dict)
    hits: dict[int, dict[str, int]] = field(default_factory=dict)


def as_bool(value: object) -> bool | None:
    """A BooleanField's value as its model reads it (SQLite stores 0/1)."""
    return None if value is None else bool(value)


FIRST = itemgetter(0)


def read(db: peewee.Database, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
    """The rows of `sql` as the driver returns them. On SQLite, text is read by the driver's
    own UTF-8 decoding (a C fast path) rather than the connection's lenient text factory
    (`store.files`: a Python call per text value, a fifth of a JSON export's time); a value
    that is not UTF-8 makes that fail, and the statement is read again the lenient way, so
    the rows are the same either way."""
    if not isinstance(db, peewee.SqliteDatabase):
        return list(db.execute_sql(sql, params).fetchall())  # type: ignore[no-untyped-call]
    connection = db.connection()  # type: ignore[no-untyped-call]
    lenient = connection.text_factory
    connection.text_factory = str
    try:
        return list(db.execute_sql(sql, params).fetchall())  # type: ignore[no-untyped-call]
    except (sqlite3.OperationalError, peewee.OperationalError):
        pass  # not UTF-8 (or another error, which the lenient read raises again)
    finally:
        connection.text_factory = lenient
    return list(db.execute_sql(sql, params).fetchall())  # type: ignore[no-untyped-call]


class _Statements:
    """Each per-call-id query of a page, built by peewee once per length of its id list and
    then run with other ids: rendering an IN list of 500 values cost more than running it."""

    def __init__(self, db: peewee.Database, build: Callable[[list[int]], peewee.Query]) -> None:
        self.db, self.build = db, build
        self.sql: dict[int, str] = {}

    def rows(self, ids: list[int]) -> list[tuple[Any, ...]]:
        sql = self.sql.get(len(ids))
        if sql is None:
            sql, params = self.db.get_sql_context().sql(self.build(ids)).query()  # type: ignore[no-untyped-call]
            if list(params) != ids:  # the ids must be its only parameters, in order
                raise AssertionError(f"unexpected parameters for {sql}")
            self.sql[len(ids)] = sql
        return read(self.db, sql, ids)

    def by_call(self, ids: list[int]) -> dict[int, list[tuple[Any, ...]]]:
        """The rows (call id first), grouped by call: the query orders them by call id."""
        return {call_id: list(group) for call_id, group in groupby(self.rows(ids), FIRST)}


def export_pages(
    db: peewee.Database, start: int, end: int, item_fields: Sequence[str], page: int = PAGE
) -> Iterator[ExportPage]:
    """See the module contract."""
    columns = [getattr(BiCall, name) for name in FACT_FIELDS]
    item_columns = [BiRubricItem.call_id, *(getattr(BiRubricItem, name) for name in item_fields)]
    items = _Statements(
        db,
        lambda ids: (
            BiRubricItem.select(*item_columns)
            .where(BiRubricItem.call_id.in_(ids))
            .order_by(BiRubricItem.call_id, BiRubricItem.position)
        ),
    )
    objections = _Statements(
        db,
        lambda ids: (
            BiObjection.select(BiObjection.call_id, BiObjection.objection, BiObjection.handling)
            .where(BiObjection.call_id.in_(ids))
            .order_by(BiObjection.call_id, BiObjection.position)
        ),
    )
    hits = _Statements(
        db,
        lambda ids: (
            TrackerHit.select(TrackerHit.call_id, TrackerHit.tracker, peewee.fn.COUNT(TrackerHit.id))
            .where(TrackerHit.call_id.in_(ids))
            .group_by(TrackerHit.call_id, TrackerHit.tracker)
        ),
    )
    after: tuple[object, object] | None = None
    while True:
        query = BiCall.select(*columns).where(BiCall.started_at < end)
        if after is None:
            query = query.where(BiCall.started_at >= start)
        else:
            # A row value: the index (started_at, call_id) is entered at the last row sent,
            # so no page reads again what earlier pages read (an OR of the two would).
            query = query.where(peewee.Tuple(BiCall.started_at, BiCall.call_id) > peewee.Tuple(*after))
        sql, params = db.get_sql_context().sql(query.order_by(BiCall.started_at, BiCall.call_id).limit(page)).query()  # type: ignore[no-untyped-call]
        facts = read(db, sql, params)
        if not facts:
            return
        ids = [fact[0] for fact in facts]
        found = ExportPage(facts)
        for part in range(0, len(ids), PAGE):  # a page bigger than PAGE: IN lists stay short
            chunk = ids[part : part + PAGE]
            found.items |= items.by_call(chunk)
            found.objections |= objections.by_call(chunk)
            for call_id, name, count in hits.rows(chunk):
                found.hits.setdefault(int(call_id), {})[str(name)] = int(count)
        yield found
        after = (facts[-1][1], facts[-1][0])
