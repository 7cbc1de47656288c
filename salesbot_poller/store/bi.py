"""The BI tables (docs/bi.md): a call's stored analysis, normalised for SQL.

Contract:
- `write_facts(call, now)` replaces the call's rows in `bi_call`, `bi_rubric_item` and
  `bi_objection` with what its `analysis_json` says (no rows when it has none, or it cannot
  be read). The caller runs it in the transaction that writes `analysis_json`
  (`Store.update`, `Store.clear_personal`), so the tables never disagree with the stored
  analysis: after personal data is removed they hold no quotes, objections nor next step.
- People's corrections (`verdict_correction`) are part of the facts: `write_facts` fills each
  corrected item's `human_verdict`, `corrected_by`, `corrected_at`, and `bi_call.score_corrected`
  (the score with the human verdicts in place of the model's: `domain.with_corrections`;
  equal to `score` while nobody corrected the call), so a later rewrite of the analysis keeps
  them; `apply_corrections(call_id)` refreshes them after a correction.
- `bi_call.tracker_hits` / `tracker_missing` count the call's rows of `bi_tracker_hit` /
  `bi_tracker_missing` (`count_trackers`, run by whoever writes either side).
- `insert_facts(calls, now)` writes the rows of calls that have none yet (a bulk insert of
  new calls, `Store.insert_calls_bulk`), in its caller's transaction, as `write_facts` would.
- `backfill()` fills them for every call analysed before they existed (`0013_bi`),
  a page of calls at a time (memory stays flat however many calls there are);
  `backfill_topics()` the topic columns added later (`0019_topics`).
- The export reads these tables a page at a time through `store.bi_export`;
  `item_ids_between(start, end)` gives its rubric columns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import cast

import peewee
from pydantic import ValidationError

from salesbot_poller.domain import CallAnalysis, with_corrections, without_personal_data
from salesbot_poller.store.base import insert_rows
from salesbot_poller.store.models import (
    BiCall,
    BiObjection,
    BiRubricItem,
    Call,
    TrackerHit,
    TrackerMiss,
    VerdictCorrection,
)

log = logging.getLogger(__name__)

PAGE = 500  # calls per page: the backfill never holds more
INSERT_CHUNK = 50  # rows per INSERT: 50 x 11 columns stays far under SQLite's variable limit


def _analysis(call: Call) -> CallAnalysis | None:
    if call.analysis_json is None:
        return None
    try:
        return CallAnalysis.model_validate_json(call.analysis_json)
    except ValidationError:
        log.warning("call %d: stored analysis unreadable, left out of the BI tables", call.id)
        return None


Row = dict[str, object]
# A rubric item's columns: the same names on `RubricResult` (stored analysis), `BiRubricItem`
# (its row) and in the export.
ITEM_FIELDS = ("item_id", "title", "weight", "verdict", "evidence", "verified", "confidence", "at")


def item_fields(item: object) -> Row:
    """`ITEM_FIELDS` of a `RubricResult` or a `BiRubricItem`."""
    return {name: getattr(item, name) for name in ITEM_FIELDS}


def _rows(call: Call, analysis: CallAnalysis, now: int) -> tuple[Row, list[Row], list[Row]]:
    step = analysis.next_step
    fact: dict[str, object] = {
        "call_id": call.id,
        "started_at": call.event_created_at,
        "analysed_at": now,
        "score": analysis.score,
        "score_corrected": analysis.score,  # `apply_corrections` sets it when people corrected it
        "profile": call.profile or "",
        "manager_id": call.responsible_user_id,
        "manager": call.manager_name,
        "entity_type": call.entity_type,
        "entity_id": call.entity_id,
        "direction": call.direction,
        "duration": call.duration,
        "next_step_action": step.action.strip() if step else "",
        "next_step_due": step.due_date if step else None,
        "topic": analysis.topic.strip(),
        "topic_closed": analysis.topic_closed,
    }
    items: list[Row] = [
        {"call_id": call.id, "position": position, **item_fields(item)} for position, item in enumerate(analysis.rubric)
    ]
    objections: list[Row] = [
        {"call_id": call.id, "position": position, "objection": o.objection, "handling": o.handling}
        for position, o in enumerate(analysis.objections)
    ]
    return fact, items, objections


def _delete(call_ids: list[int]) -> None:
    for model in (BiRubricItem, BiObjection, BiCall):
        model.delete().where(model.call_id.in_(call_ids)).execute()


def _insert(calls: Iterable[Call], now: int | None, bulk: bool = False) -> None:
    """Rows for `calls`; `now` None: each call's `updated_at` stands for its analysis time."""
    facts: list[Row] = []
    items: list[Row] = []
    objections: list[Row] = []
    for call in calls:
        analysis = _analysis(call)
        if analysis is None:
            continue
        fact, call_items, call_objections = _rows(call, analysis, call.updated_at if now is None else now)
        facts.append(fact)
        items += call_items
        objections += call_objections
    for model, rows in ((BiCall, facts), (BiRubricItem, items), (BiObjection, objections)):
        if bulk:
            insert_rows(model._meta.database, model, rows)
            continue
        for part in peewee.chunked(rows, INSERT_CHUNK):
            model.insert_many(part).execute()


def write_facts(call: Call, now: int) -> None:
    """See the module contract: run inside the transaction that writes `analysis_json`."""
    _delete([call.id])
    _insert([call], now)
    count_trackers(call.id)
    analysis = _analysis(call)
    if analysis is not None:
        _corrections(call.id, analysis)


def apply_corrections(call: Call) -> None:
    """The call's corrections in its BI rows (see the module contract); run in the transaction
    that stores a correction. A call without a readable analysis has no rows to correct."""
    analysis = _analysis(call)
    if analysis is not None:
        _corrections(call.id, analysis)


def _corrections(call_id: int, analysis: CallAnalysis) -> None:
    fixes = list(VerdictCorrection.select().where(VerdictCorrection.call_id == call_id))
    if not fixes:
        return
    for fix in fixes:
        BiRubricItem.update(
            human_verdict=fix.verdict, corrected_by=fix.corrected_by, corrected_at=fix.corrected_at
        ).where(BiRubricItem.call_id == call_id, BiRubricItem.item_id == fix.item_id).execute()
    corrected = with_corrections(analysis, {fix.item_id: fix.verdict for fix in fixes})
    BiCall.update(score_corrected=corrected.score).where(BiCall.call_id == call_id).execute()


def insert_facts(calls: Iterable[Call], now: int) -> None:
    """The rows of `calls`, which have none yet (no delete first): `write_facts` in bulk, in
    the caller's transaction. Tracker counts stay 0 (no hits stored yet)."""
    _insert(calls, now, bulk=True)


def count_trackers(call_id: int) -> None:
    """The call's `tracker_hits` and `tracker_missing` on `bi_call` from its stored hits and
    misses (`store.trackers`); run in the transaction that writes either."""
    hits = TrackerHit.select().where(TrackerHit.call_id == call_id).count()
    missing = TrackerMiss.select().where(TrackerMiss.call_id == call_id).count()
    BiCall.update(tracker_hits=hits, tracker_missing=missing).where(BiCall.call_id == call_id).execute()


def rewrite_facts(call: Call) -> None:
    """`write_facts` after the call's analysis changed for another reason than a new analysis
    (its personal data removed): the analysis time stays what it was."""
    previous = BiCall.get_or_none(BiCall.call_id == call.id)
    write_facts(call, previous.analysed_at if previous is not None else call.updated_at)


LATER_COLUMNS = ("profile", "phone_key")  # added to `call` by migrations after 0013_bi


def backfill_topics() -> int:
    """`bi_call.topic` and `topic_closed` from each call's stored analysis (`0019_topics`), a
    page at a time, by UPDATE of those columns only (later migrations may add others); a
    call whose personal data was removed before loses its free topic here too (in its
    `analysis_json` as well), as `forget` and retention now remove it. Returns how many calls."""
    done = last = 0
    while True:
        page = list(
            Call.select(Call.id, Call.analysis_json, Call.personal_removed_at)
            .where(Call.analysis_json.is_null(False), Call.id > last)
            .order_by(Call.id)
            .limit(PAGE)
        )
        if not page:
            return done
        for call in page:
            if call.personal_removed_at is not None:
                call.analysis_json = without_personal_data(call.analysis_json)
                Call.update(analysis_json=call.analysis_json).where(Call.id == call.id).execute()
            analysis = _analysis(call)
            if analysis is not None:
                topic = analysis.topic.strip()
                BiCall.update(topic=topic, topic_closed=analysis.topic_closed).where(
                    BiCall.call_id == call.id
                ).execute()
        done += len(page)
        last = page[-1].id


def backfill() -> int:
    """Fill the BI tables for every call with a stored analysis; returns how many calls. The
    analysis time of such a call is not stored anywhere: its `updated_at` stands for it."""
    done = 0
    last = 0
    # The columns of 0013's day only: a database upgraded from before it has no later ones
    # (`profile`, 0015); `_rows` reads a missing one as its default.
    columns = [f for name, f in Call._meta.fields.items() if name not in LATER_COLUMNS]
    while True:
        page = list(
            Call.select(*columns).where(Call.analysis_json.is_null(False), Call.id > last).order_by(Call.id).limit(PAGE)
        )
        if not page:
            return done
        _delete([call.id for call in page])
        _insert(page, None)
        done += len(page)
        last = page[-1].id


def item_ids_between(start: int, end: int) -> list[str]:
    """The rubric item ids of calls in [start, end), in rubric order (an export's columns)."""
    query = (
        BiRubricItem.select(BiRubricItem.item_id, peewee.fn.MIN(BiRubricItem.position).alias("first"))
        .join(BiCall, on=(BiRubricItem.call_id == BiCall.call_id))
        .where(BiCall.started_at >= start, BiCall.started_at < end)
        .group_by(BiRubricItem.item_id)
        .order_by(peewee.fn.MIN(BiRubricItem.position), BiRubricItem.item_id)
        .tuples()
    )
    rows = cast(Iterable[tuple[str, int]], query)  # .tuples() rows, not models
    return [str(item_id) for item_id, _ in rows]
