"""The export as it was written before it read plain rows (peewee models per call and item,
a datetime per time): the oracle tests/test_export_oracle.py compares today's output with,
byte for byte. Kept as it was; do not speed it up."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from typing import Any, TextIO

import peewee

from salesbot_poller.cli.export import BOM, day_bounds
from salesbot_poller.cli.export_rows import FACT_COLUMNS
from salesbot_poller.store import Store
from salesbot_poller.store.bi import ITEM_FIELDS
from salesbot_poller.store.models import BiCall, BiObjection, BiRubricItem

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class ExportedCall:
    fact: BiCall
    items: list[BiRubricItem] = field(default_factory=list)
    objections: list[BiObjection] = field(default_factory=list)


def export_pages(start: int, end: int, page: int = 500) -> Iterator[list[ExportedCall]]:
    after: tuple[int, int] | None = None
    while True:
        query = BiCall.select().where(BiCall.started_at < end)
        if after is None:
            query = query.where(BiCall.started_at >= start)
        else:
            query = query.where(peewee.Tuple(BiCall.started_at, BiCall.call_id) > peewee.Tuple(*after))
        facts = list(query.order_by(BiCall.started_at, BiCall.call_id).limit(page))
        if not facts:
            return
        ids = [fact.call_id for fact in facts]
        items: dict[int, list[BiRubricItem]] = defaultdict(list)
        for item in (
            BiRubricItem.select()
            .where(BiRubricItem.call_id.in_(ids))
            .order_by(BiRubricItem.call_id, BiRubricItem.position)
        ):
            items[item.call_id].append(item)
        objections: dict[int, list[BiObjection]] = defaultdict(list)
        for objection in (
            BiObjection.select().where(BiObjection.call_id.in_(ids)).order_by(BiObjection.call_id, BiObjection.position)
        ):
            objections[objection.call_id].append(objection)
        yield [ExportedCall(fact, items[fact.call_id], objections[fact.call_id]) for fact in facts]
        after = (facts[-1].started_at, facts[-1].call_id)


def cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _when(timestamp: int, tz: tzinfo) -> str:
    return datetime.fromtimestamp(timestamp, tz).isoformat(sep=" ")


def _facts(call: ExportedCall, tz: tzinfo) -> dict[str, Any]:
    fact = call.fact
    return {
        "call_id": fact.call_id,
        "started_at": _when(fact.started_at, tz),
        "manager_id": fact.manager_id,
        "manager": fact.manager,
        "entity_type": fact.entity_type,
        "entity_id": fact.entity_id,
        "direction": fact.direction,
        "duration": fact.duration,
        "score": fact.score,
        "profile": fact.profile,
        "topic": fact.topic,
        "next_step_action": fact.next_step_action,
        "next_step_due": fact.next_step_due,
        "analysed_at": _when(fact.analysed_at, tz),
    }


def _json_line(call: ExportedCall, tz: tzinfo, hits: dict[str, int]) -> str:
    row = _facts(call, tz)
    row["items"] = [{name: getattr(item, name) for name in ITEM_FIELDS} for item in call.items]
    row["objections"] = [{"objection": o.objection, "handling": o.handling} for o in call.objections]
    row["trackers"] = hits
    row["tracker_missing"] = call.fact.tracker_missing
    return json.dumps(row, ensure_ascii=False) + "\n"


def export(
    store: Store,
    since: date,
    until: date,
    tz: tzinfo,
    fmt: str,
    out: TextIO,
    delimiter: str = ",",
    trackers: Sequence[str] = (),
) -> int:
    start, end = day_bounds(since, until, tz)
    written = 0
    writer = None
    item_ids: list[str] = []
    if fmt == "csv":
        out.write(BOM)
        item_ids = store.export_item_ids(start, end)
        writer = csv.writer(out, delimiter=delimiter)
        columns = [*FACT_COLUMNS, "objections", *(f"item:{item_id}" for item_id in item_ids)]
        writer.writerow([*columns, *(f"tracker:{name}" for name in trackers)])
    for page in export_pages(start, end):
        hits = store.tracker_counts_of([call.fact.call_id for call in page])
        for call in page:
            counts = hits.get(call.fact.call_id, {})
            if writer is None:
                out.write(_json_line(call, tz, counts))
            else:
                facts = _facts(call, tz)
                verdicts = {item.item_id: item.verdict for item in call.items}
                objections = " | ".join(o.objection for o in call.objections)
                writer.writerow(
                    [
                        *(cell(facts[c]) for c in FACT_COLUMNS),
                        cell(objections),
                        *(cell(verdicts.get(i)) for i in item_ids),
                        *(counts.get(name, 0) for name in trackers),
                    ]
                )
            written += 1
    out.flush()
    return written
