"""The export's read of the BI tables: analysed calls a page at a time, as plain rows.

Contract:
- `export_pages(db, start, end, item_fields, page)` yields the analysed calls that happened in
  [start, end), oldest first, `page` calls at a time (`ExportPage`), by keyset: each page
  starts in the index (started_at, call_id) after the last row of the one before (no OFFSET,
  no server-side cursor), so a page costs the same at the end of a long period as at its start.
- A page holds, for its calls only (one query each, keyed by call id):
  `facts`: one tuple per call of `FACT_FIELDS`, in that order;
  `items[call_id]`: the call's rubric items in rubric order, each a tuple of `item_fields`
  (names of `bi.ITEM_FIELDS`: a CSV asks for the verdicts only, JSON Lines for everything);
  `objections[call_id]`: (objection, handling) in order;
  `hits[call_id]`: {tracker name: hits in the call} for the trackers it has hits of.
- Why tuples: an export of a long history spends its time in Python, not in the database;
  a peewee model per row (and per item) cost more than everything else together. The SQL is
  still built by peewee (the same text on SQLite and PostgreSQL); only the rows are read
  from the cursor as the driver returns them. Values are what the models would give, except
  `verified`, which SQLite returns as 0/1 (the reader makes it a bool: `as_bool`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

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

    facts: list[tuple[object, ...]]
    items: dict[int, list[tuple[object, ...]]] = field(default_factory=dict)
    objections: dict[int, list[tuple[object, ...]]] = field(default_factory=dict)
    hits: dict[int, dict[str, int]] = field(default_factory=dict)


def as_bool(value: object) -> bool | None:
    """A BooleanField's value as its model reads it (SQLite stores 0/1)."""
    return None if value is None else bool(value)


def _rows(db: peewee.Database, query: peewee.Query) -> list[tuple[object, ...]]:
    """The query's rows as the driver returns them: no model, no converter per value."""
    return list(db.execute(query).fetchall())  # type: ignore[no-untyped-call]


def _by_call(rows: list[tuple[object, ...]]) -> dict[int, list[tuple[object, ...]]]:
    """Rows whose first value is a call id, grouped by it (the rest of each row, in order)."""
    found: dict[int, list[tuple[object, ...]]] = {}
    for row in rows:
        key = int(row[0])  # type: ignore[call-overload]
        group = found.get(key)
        if group is None:
            found[key] = group = []
        group.append(row[1:])
    return found


def export_pages(
    db: peewee.Database, start: int, end: int, item_fields: Sequence[str], page: int = PAGE
) -> Iterator[ExportPage]:
    """See the module contract."""
    columns = [getattr(BiCall, name) for name in FACT_FIELDS]
    items = [BiRubricItem.call_id, *(getattr(BiRubricItem, name) for name in item_fields)]
    after: tuple[object, object] | None = None
    while True:
        query = BiCall.select(*columns).where(BiCall.started_at < end)
        if after is None:
            query = query.where(BiCall.started_at >= start)
        else:
            # A row value: the index (started_at, call_id) is entered at the last row sent,
            # so no page reads again what earlier pages read (an OR of the two would).
            query = query.where(peewee.Tuple(BiCall.started_at, BiCall.call_id) > peewee.Tuple(*after))
        facts = _rows(db, query.order_by(BiCall.started_at, BiCall.call_id).limit(page))
        if not facts:
            return
        ids = [fact[0] for fact in facts]
        found = ExportPage(facts)
        for part in range(0, len(ids), PAGE):  # a page bigger than PAGE: IN lists stay short
            chunk = ids[part : part + PAGE]
            found.items |= _by_call(
                _rows(
                    db,
                    BiRubricItem.select(*items)
                    .where(BiRubricItem.call_id.in_(chunk))
                    .order_by(BiRubricItem.call_id, BiRubricItem.position),
                )
            )
            found.objections |= _by_call(
                _rows(
                    db,
                    BiObjection.select(BiObjection.call_id, BiObjection.objection, BiObjection.handling)
                    .where(BiObjection.call_id.in_(chunk))
                    .order_by(BiObjection.call_id, BiObjection.position),
                )
            )
            hits = TrackerHit.select(TrackerHit.call_id, TrackerHit.tracker, peewee.fn.COUNT(TrackerHit.id))
            for call_id, name, count in _rows(
                db, hits.where(TrackerHit.call_id.in_(chunk)).group_by(TrackerHit.call_id, TrackerHit.tracker)
            ):
                found.hits.setdefault(int(call_id), {})[str(name)] = int(count)  # type: ignore[call-overload]
        yield found
        after = (facts[-1][1], facts[-1][0])
