"""The store's reads for the head of sales' reports and bot commands.

A mixin of `Store` (the one object every query goes through), kept apart so `store.core`
stays readable. Each method reads; none writes.

`manager_totals` and `rubric_totals` count a period's classified calls per manager in the
database (GROUP BY, from `call`'s plain columns and the BI tables `bi_call` and
`bi_rubric_item`): the team figures of `/stats` without loading a call row, its transcript
or its analysis. A call counts as answered as `domain.answered` says; its score and verdicts
are those of its BI rows, which exist exactly when its stored analysis can be read, as people
corrected them (`bi_call.score_corrected`, `bi_rubric_item.human_verdict`) when they did.

`SCORE` and `VERDICT` are the one place a report reads a call's score or an item's verdict:
every query of the reports (here and in `store.report_figures`) goes through them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import peewee
from peewee import JOIN, Case, fn

from salesbot_poller.domain import NOT_REACHED_STATUSES
from salesbot_poller.store import search
from salesbot_poller.store.models import BiCall, BiRubricItem, Call

FIND_LIMIT = 10
# The score and verdicts reports count: people's corrections in place of the model's.
SCORED_VERDICTS = ("done", "partly", "missed")  # not_applicable, not_assessed: not scored
IN_CHUNK = 500  # ids per IN (...): far under SQLite's variable limit

# The score / verdict reports count (weekly report, digest, /stats, /worst, topics): a person's
# correction in place of the model's (issue 24), here and only here. A query using SCORE joins
# `BiCall`, one using VERDICT reads `BiRubricItem`.
SCORE: Any = fn.COALESCE(BiCall.score_corrected, BiCall.score)
VERDICT: Any = fn.COALESCE(BiRubricItem.human_verdict, BiRubricItem.verdict)


@dataclass(frozen=True)
class ManagerTotals:
    """One `manager_name` value's calls in a period (None: no responsible user)."""

    manager: str | None
    calls: int  # answered conversations
    talk_seconds: int
    missed: int  # missed incoming calls
    returned: int  # of those, called back
    score_total: int  # the scores of answered calls with a readable analysis and a score
    scored_calls: int
    unreadable: int  # answered calls whose stored analysis cannot be read


@dataclass(frozen=True)
class TopicTotals:
    """One closed-list topic's analysed calls in a period (`topic_totals`)."""

    topic: str
    calls: int
    score_total: int
    scored_calls: int


@dataclass(frozen=True)
class ItemTotals:
    """One manager's verdicts on one rubric item over a period's answered calls."""

    manager: str | None
    item_id: str
    title: str  # as the first call that had it (by call id, then rubric position) named it
    first: tuple[int, int]  # that call's id and the item's position in it
    credit_halves: int  # done counts 2, partly 1, missed 0
    scored: int  # done, partly or missed
    missed: int


def _in_period(start: int, end: int) -> Any:
    return (Call.event_created_at >= start) & (Call.event_created_at < end) & Call.kind.is_null(False)


def _answered() -> Any:
    """`domain.answered` in SQL: a conversation that lasted and was not "not reached"/"busy"."""
    lasted = Call.duration.is_null(False) & (Call.duration != 0)
    reached = Call.call_status.is_null() | Call.call_status.not_in(NOT_REACHED_STATUSES)
    return (Call.kind != "missed") & lasted & reached


def _sum(condition: Any, value: Any = 1) -> Any:
    return fn.SUM(Case(None, [(condition, value)], 0))


def _int(value: object) -> int:
    return int(cast(int, value or 0))  # SUM over no row is NULL; PostgreSQL may give a Decimal


class ReportQueries:
    db: peewee.Database

    def unreturned_missed(self, since: int) -> list[Call]:
        """Missed incoming calls since `since` that nobody has called back yet (and whose
        personal data is still there: a forgotten call is nobody's to return), oldest first."""
        query = Call.select().where(
            Call.kind == "missed",
            Call.event_created_at >= since,
            Call.callback_call_id.is_null(),
            Call.personal_removed_at.is_null(),
        )
        return list(query.order_by(Call.event_created_at, Call.id))

    def call_by_event(self, event_id: str) -> Call | None:
        return Call.get_or_none(Call.event_id == event_id)

    def find_calls(self, text: str, limit: int = FIND_LIMIT) -> list[Call]:
        """Calls whose transcript holds every word of `text`, newest first (`store.search`)."""
        ids = search.matching_ids(self.db, search.query_words(text), limit)
        found = {call.id: call for call in Call.select().where(Call.id.in_(ids))} if ids else {}
        return [found[call_id] for call_id in ids if call_id in found]

    def manager_totals(self, start: int, end: int) -> list[ManagerTotals]:
        """Per `manager_name`, the classified calls that happened in [start, end) (module docstring)."""
        talked = _answered()
        has_score = talked & SCORE.is_null(False)
        analysed = Call.analysis_json.is_null(False) & (Call.analysis_json != "")
        query = (
            Call.select(
                Call.manager_name,
                _sum(talked),
                _sum(talked, Call.duration),
                _sum(Call.kind == "missed"),
                _sum((Call.kind == "missed") & Call.callback_call_id.is_null(False)),
                _sum(has_score, SCORE),
                _sum(has_score),
                _sum(talked & analysed & BiCall.call_id.is_null()),
            )
            .join(BiCall, JOIN.LEFT_OUTER, on=(BiCall.call_id == Call.id))
            .where(_in_period(start, end))
            .group_by(Call.manager_name)
            .tuples()
        )
        return [ManagerTotals(row[0], *map(_int, row[1:])) for row in cast(Iterable[tuple[Any, ...]], query)]

    def topic_totals(self, start: int, end: int) -> list[TopicTotals]:
        """Per topic of the closed list (`bi_call.topic_closed`), exactly as stored, the analysed
        calls that happened in [start, end), most calls first; free topics are left out."""
        scored = SCORE.is_null(False)
        query = (
            BiCall.select(BiCall.topic, fn.COUNT(BiCall.call_id), _sum(scored, SCORE), _sum(scored))
            .where(BiCall.started_at >= start, BiCall.started_at < end, BiCall.topic_closed == True)  # noqa: E712
            .group_by(BiCall.topic)
            .tuples()
        )
        totals = [TopicTotals(str(row[0]), *map(_int, row[1:])) for row in cast(Iterable[tuple[Any, ...]], query)]
        return sorted(totals, key=lambda t: (-t.calls, t.topic))

    def rubric_totals(self, start: int, end: int) -> list[ItemTotals]:
        """Per `manager_name` and rubric item, the verdicts of the answered calls that happened
        in [start, end) (module docstring)."""
        verdict = VERDICT
        query = (
            BiRubricItem.select(
                Call.manager_name,
                BiRubricItem.item_id,
                fn.MIN(BiRubricItem.call_id),
                fn.SUM(Case(verdict, [("done", 2), ("partly", 1)], 0)),
                _sum(verdict.in_(SCORED_VERDICTS)),
                _sum(verdict == "missed"),
            )
            .join(Call, on=(Call.id == BiRubricItem.call_id))
            .where(_in_period(start, end) & _answered())
            .group_by(Call.manager_name, BiRubricItem.item_id)
            .tuples()
        )
        rows = list(cast(Iterable[tuple[Any, ...]], query))
        firsts: dict[tuple[int, str], tuple[int, str]] = {}  # (call, item) -> its first position, title
        for chunk in peewee.chunked(sorted({int(row[2]) for row in rows}), IN_CHUNK):
            named = (
                BiRubricItem.select(
                    BiRubricItem.call_id, BiRubricItem.item_id, BiRubricItem.position, BiRubricItem.title
                )
                .where(BiRubricItem.call_id.in_(chunk))
                .order_by(BiRubricItem.call_id, BiRubricItem.position)
                .tuples()
            )
            for call_id, item_id, position, title in cast(Iterable[tuple[int, str, int, str]], named):
                firsts.setdefault((call_id, item_id), (position, title))
        totals = []
        for manager, item_id, first_call, halves, scored, missed in rows:
            position, title = firsts[(int(first_call), item_id)]
            totals.append(
                ItemTotals(
                    manager, item_id, title, (int(first_call), position), _int(halves), _int(scored), _int(missed)
                )
            )
        return totals
