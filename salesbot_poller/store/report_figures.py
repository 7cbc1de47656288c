"""The store's reads behind the weekly report's chart and objections, the digest's weakest
calls and profiles, and `/worst`: counted in the database (GROUP BY, window functions), never
a whole call row, its transcript nor its `analysis_json` (issue 29).

A mixin of `Store`, beside `store.reports` (the team's totals); each method reads, none
writes. Scores come through `reports.SCORE` (the one expression reports read a score by).
A call's BI rows exist exactly when its stored analysis can be read (`store.bi`), so "has a
readable analysis with a score" is "has a `bi_call` row whose SCORE is not NULL". The
queries are plain peewee: SQLite and PostgreSQL alike (`ROW_NUMBER() OVER` is in both).

Where a text is read (objections, the weakest call's name), only that column is selected,
and no more rows than the answer needs: one per distinct objection text, one per manager,
at most `limit` calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import peewee
from peewee import fn

from salesbot_poller.store.models import BiCall, BiObjection, Call
from salesbot_poller.store.reports import IN_CHUNK, SCORE, _answered, _in_period, _int, _sum

TEXT_PAGE = 500  # objection texts read per query by `objection_texts`


@dataclass(frozen=True)
class ScoredWeek:
    """One `manager_name` value's scored calls in one week of `week_scores`."""

    manager: str | None
    week: int  # the index of its start in the `week_starts` given
    score_total: int
    scored_calls: int
    first_at: int  # the time of its first such call that week


@dataclass(frozen=True)
class ObjectionTotal:
    """One objection text (exactly as stored) of a period's answered calls."""

    text: str
    count: int
    first: tuple[int, int]  # where it was met first: call id, position in that call


@dataclass(frozen=True)
class WeakestCall:
    """A manager's lowest-scored conversation of a period (the first by call id on a tie)."""

    manager: str | None
    score: int
    call_id: int
    entity_type: str
    entity_id: int
    entity_name: str | None
    phone: str | None


def _first_per_manager(query: Any, order: Sequence[Any], columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """The first row of `query` per `manager_name` by `order`: (manager_name, *columns)."""
    rank = fn.ROW_NUMBER().over(partition_by=[Call.manager_name], order_by=list(order))
    ranked = query.select_extend(rank.alias("rank")).alias("ranked")
    picked = Call.select(ranked.c.manager_name, *(getattr(ranked.c, name) for name in columns))
    return list(cast(Iterable[tuple[Any, ...]], picked.from_(ranked).where(ranked.c.rank == 1).tuples()))


class ReportFigures:
    db: peewee.Database

    def week_scores(self, week_starts: Sequence[int], end: int) -> list[ScoredWeek]:
        """Per `manager_name` and week (`week_starts` ascending, the last one ending at `end`),
        the scores of the calls that happened then with a readable analysis and a score, of
        any kind (the weekly chart's), and the time of the first; weeks without one are left out."""
        found = []
        bounds = [*week_starts[1:], end]
        for week, (start, stop) in enumerate(zip(week_starts, bounds, strict=True)):
            query = (
                Call.select(Call.manager_name, fn.SUM(SCORE), fn.COUNT(SCORE), fn.MIN(Call.event_created_at))
                .join(BiCall, on=(BiCall.call_id == Call.id))
                .where(Call.event_created_at >= start, Call.event_created_at < stop, SCORE.is_null(False))
                .group_by(Call.manager_name)
                .tuples()
            )
            for manager, total, count, first in cast(Iterable[tuple[Any, ...]], query):
                found.append(ScoredWeek(manager, week, _int(total), _int(count), int(first)))
        return found

    def first_scored_ids(self, times: Iterable[int]) -> dict[tuple[str | None, int], int]:
        """Per `manager_name` and time among `times`, the lowest id of the calls that happened
        then with a readable analysis and a score (the first of a manager's calls of one second)."""
        found: dict[tuple[str | None, int], int] = {}
        for chunk in peewee.chunked(sorted(set(times)), IN_CHUNK):
            query = (
                Call.select(Call.manager_name, Call.event_created_at, fn.MIN(Call.id))
                .join(BiCall, on=(BiCall.call_id == Call.id))
                .where(Call.event_created_at.in_(chunk), SCORE.is_null(False))
                .group_by(Call.manager_name, Call.event_created_at)
                .tuples()
            )
            for manager, at, call_id in cast(Iterable[tuple[Any, ...]], query):
                found[(manager, int(at))] = int(call_id)
        return found

    def weakest_calls(self, start: int, end: int) -> list[WeakestCall]:
        """Per `manager_name`, the lowest-scored classified call of [start, end) that is not a
        missed one and has a readable analysis with a score; the first by id on a tie."""
        query = (
            Call.select(
                Call.manager_name,
                SCORE.alias("score"),
                Call.id,
                Call.entity_type,
                Call.entity_id,
                Call.entity_name,
                Call.phone,
            )
            .join(BiCall, on=(BiCall.call_id == Call.id))
            .where(_in_period(start, end), Call.kind != "missed", SCORE.is_null(False))
        )
        columns = ["score", "id", "entity_type", "entity_id", "entity_name", "phone"]
        rows = _first_per_manager(query, [SCORE, Call.id], columns)
        return [WeakestCall(m, int(s), int(i), str(t), int(e), n, p) for m, s, i, t, e, n, p in rows]

    def lowest_scored(self, start: int, end: int, limit: int) -> list[tuple[int, Call]]:
        """The `limit` calls of [start, end) with a readable analysis and the lowest scores
        (latest first on a tie, then by id), each with its score; the calls hold only the
        columns a line about them needs (id, time, manager, entity)."""
        query = (
            Call.select(
                Call.id,
                Call.event_created_at,
                Call.manager_name,
                Call.entity_type,
                Call.entity_id,
                Call.entity_name,
                SCORE.alias("report_score"),
            )
            .join(BiCall, on=(BiCall.call_id == Call.id))
            .where(Call.event_created_at >= start, Call.event_created_at < end, SCORE.is_null(False))
            .order_by(SCORE, Call.event_created_at.desc(), Call.id)
            .limit(limit)
        )
        return [(int(getattr(call, "report_score")), call) for call in query.objects()]  # noqa: B009  (a selected alias)

    def profile_totals(self, start: int, end: int) -> list[tuple[str | None, int, int]]:
        """Per `Call.profile` value, the classified calls of [start, end) given a profile or
        skipped as matching none ("no profile"): (profile, answered conversations, missed)."""
        query = (
            Call.select(Call.profile, _sum(_answered()), _sum(Call.kind == "missed"))
            .where(_in_period(start, end), Call.profile.is_null(False) | (Call.skip_reason == "no profile"))
            .group_by(Call.profile)
            .tuples()
        )
        rows = cast(Iterable[tuple[Any, ...]], query)
        return [(profile, _int(talks), _int(missed)) for profile, talks, missed in rows]

    def objection_totals(self, start: int, end: int) -> list[ObjectionTotal]:
        """Per objection text (exactly as stored, blank ones too), the objections of the answered
        calls of [start, end) with a readable analysis: how many, and where it was met first.
        One row per distinct text: a week's objections are never all held at once."""
        query = (
            BiObjection.select(
                BiObjection.objection,
                BiObjection.call_id,
                BiObjection.position,
                fn.COUNT(BiObjection.id).over(partition_by=[BiObjection.objection]).alias("count"),
                fn.ROW_NUMBER()
                .over(partition_by=[BiObjection.objection], order_by=[BiObjection.call_id, BiObjection.position])
                .alias("rank"),
            )
            .join(Call, on=(Call.id == BiObjection.call_id))
            .where(_in_period(start, end) & _answered())
            .alias("ranked")
        )
        picked = BiObjection.select(query.c.objection, query.c.count, query.c.call_id, query.c.position)
        rows = cast(Iterable[tuple[Any, ...]], picked.from_(query).where(query.c.rank == 1).tuples())
        return [ObjectionTotal(str(text), int(count), (int(call), int(at))) for text, count, call, at in rows]

    def objection_texts(self, start: int, end: int, limit: int) -> list[str]:
        """The first `limit` objections (stripped, blank ones left out) of the answered calls of
        [start, end) with a readable analysis, by call id and position: what a grouper is
        sent. Read a page at a time by keyset: never more than the pages `limit` needs."""
        texts: list[str] = []
        after = (0, -1)
        while len(texts) < limit:
            query = (
                BiObjection.select(BiObjection.call_id, BiObjection.position, BiObjection.objection)
                .join(Call, on=(Call.id == BiObjection.call_id))
                .where(
                    _in_period(start, end) & _answered(),
                    (BiObjection.call_id > after[0])
                    | ((BiObjection.call_id == after[0]) & (BiObjection.position > after[1])),
                )
                .order_by(BiObjection.call_id, BiObjection.position)
                .limit(TEXT_PAGE)
                .tuples()
            )
            page = list(cast(Iterable[tuple[int, int, str]], query))
            texts += [text.strip() for _, _, text in page if text.strip()]
            if len(page) < TEXT_PAGE:
                break
            after = (int(page[-1][0]), int(page[-1][1]))
        return texts[:limit]
