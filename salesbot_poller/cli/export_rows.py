"""The export's rows, a page at a time (`cli/export.py` has the contract of what they hold).

Contract:
- `csv_rows(page, when, item_ids, trackers)`: the page's CSV rows for `csv.writer.writerows`;
  `json_lines(page, when)`: its JSON Lines, each line what `json.dumps(row, ensure_ascii=False)`
  writes for the row's dict. `when` formats a time (`LocalTimes`).
- Why so written: an export of a long history spends its time here, once per call and per
  rubric item. Text cells that repeat (a manager, a verdict) are worked out once (`Cells`);
  a JSON line's items are written from a template (`_items_json`), the rest by the json
  module. Whatever the template cannot vouch for (a value of an unexpected type, a float that
  is not finite) goes through the json module, so every line is what it would have written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from json.encoder import encode_basestring
from operator import itemgetter
from typing import Any

from salesbot_poller.store.bi_export import FACT_FIELDS, ExportPage, as_bool

FACT_COLUMNS = list(FACT_FIELDS[:-1])  # the export's columns: the facts read, less the trackers not said


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> object:
    """A CSV cell: None as empty, text a spreadsheet would run as a formula with a leading `'`."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class Cells(dict[object, object]):
    """`cell` of text values, each worked out once (bounded: forgotten past `LIMIT` values)."""

    LIMIT = 4096

    def __missing__(self, value: object) -> object:
        if len(self) >= self.LIMIT:
            self.clear()
        self[value] = found = cell(value)
        return found


def csv_rows(
    page: ExportPage, when: Callable[[int], str], item_ids: Sequence[str], trackers: Sequence[str]
) -> list[list[object]]:
    """The page's CSV rows: the facts of `FACT_COLUMNS`, objections, verdicts, tracker hits."""
    text = Cells()  # a text column's cells repeat (a manager, a topic): each is worked out once
    rows: list[list[object]] = []
    for fact in page.facts:
        call_id, started, manager_id, manager, kind, entity, direction, duration, score = fact[:9]
        profile, topic, action, due, analysed = fact[9:14]
        verdicts = dict(map(PAIR, page.items.get(call_id, ())))  # (call_id, item_id, verdict) rows
        objections = page.objections.get(call_id, ())
        hits = page.hits.get(call_id, {})
        rows.append(
            [
                call_id,
                when(started),
                "" if manager_id is None else manager_id,
                text[manager],
                text[kind],
                "" if entity is None else entity,
                text[direction],
                "" if duration is None else duration,
                "" if score is None else score,
                text[profile],
                text[topic],
                cell(action),
                text[due],
                when(analysed),
                cell(" | ".join([o[1] for o in objections])),
                *[text[verdicts.get(item_id)] for item_id in item_ids],
                *[hits.get(name, 0) for name in trackers],
            ]
        )
    return rows


PAIR = itemgetter(1, 2)
ENCODE = json.JSONEncoder(ensure_ascii=False).encode  # what json.dumps(..., ensure_ascii=False) runs


# One rubric item as the json module writes its dict (keys in `ITEM_FIELDS` order).
ITEM_JSON = (
    '{"item_id": %s, "title": %s, "weight": %s, "verdict": %s, "evidence": %s, "verified": %s, '
    '"confidence": %s, "at": %s}'
)
JSON_BOOLS: dict[object, str] = {None: "null", False: "false", True: "true"}  # 0 and 1 are False and True here
ITEMS = "\x00items\x00"  # the items' place in a line, written by the json module as:
ITEMS_JSON = json.dumps(ITEMS)
NOT_FINITE = (": nan", ": inf", ": -inf")  # what repr writes for floats the json module writes otherwise


def _items_json(items: Sequence[tuple[Any, ...]]) -> str | None:
    """The items' JSON array from the template; None when it cannot vouch for it."""
    try:
        text = (
            "["
            + ", ".join(
                [
                    ITEM_JSON
                    % (
                        encode_basestring(item_id),
                        encode_basestring(title),
                        float.__repr__(weight),
                        encode_basestring(verdict),
                        encode_basestring(evidence),
                        JSON_BOOLS[verified],
                        float.__repr__(confidence),
                        "null" if at is None else int.__repr__(at),
                    )
                    for _, item_id, title, weight, verdict, evidence, verified, confidence, at in items
                ]
            )
            + "]"
        )
    except (TypeError, KeyError):
        return None  # not a str, a float, an int or a boolean where one belongs
    return None if (NOT_FINITE[0] in text or NOT_FINITE[1] in text or NOT_FINITE[2] in text) else text


def json_lines(page: ExportPage, when: Callable[[int], str]) -> str:
    """The page's JSON Lines: per call its facts, every item and objection in full, its hits."""
    lines = []
    for fact in page.facts:
        call_id = fact[0]
        row: dict[str, object] = dict(zip(FACT_COLUMNS, fact, strict=False))
        row["started_at"] = when(fact[1])
        row["analysed_at"] = when(fact[13])
        items = page.items.get(call_id, ())
        fast = _items_json(items)
        row["items"] = (
            ITEMS
            if fast is not None
            else [
                {
                    "item_id": item_id,
                    "title": title,
                    "weight": weight,
                    "verdict": verdict,
                    "evidence": evidence,
                    "verified": as_bool(verified),
                    "confidence": confidence,
                    "at": at,
                }
                for _, item_id, title, weight, verdict, evidence, verified, confidence, at in items
            ]
        )
        row["objections"] = [
            {"objection": objection, "handling": handling}
            for _, objection, handling in page.objections.get(call_id, ())
        ]
        row["trackers"] = page.hits.get(call_id, {})
        row["tracker_missing"] = fact[14]
        line = ENCODE(row)
        if fast is not None:
            if line.count(ITEMS_JSON) != 1:  # a fact's own text is the marker: the json module's way
                row["items"] = json.loads(fast)
                line = ENCODE(row)
            else:
                line = line.replace(ITEMS_JSON, fast)
        lines.append(line)
    lines.append("")
    return "\n".join(lines)
