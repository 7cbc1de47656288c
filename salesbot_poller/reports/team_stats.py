"""The team's figures for a period, from stored calls: what the weekly report and `/stats` say.

Contract (pure functions of `Call` rows; nothing is read or sent here):
- `figures(calls)`: per manager (`Call.manager_name`, else `MANAGER_UNKNOWN`): answered calls
  (`domain.answered`) and their talk time; scores of analysed calls (None scores left out);
  missed incoming calls and how many were returned (`callback_call_id`); per rubric item how
  the manager did it: done counts 1, partly ½, missed 0; `not_applicable` and `not_assessed`
  are not scored. Busiest manager first (calls, then missed calls, then name).
- `ManagerFigures.weakest`: the item with the lowest share done (below 100%), with that share;
  ties go to the item scored more often, then to the earlier one.
- `figures_in_store(store, start, end)`: `figures(store.calls_between(start, end))` counted by
  the database (`Store.manager_totals`, `Store.rubric_totals`): the same managers, numbers,
  titles and order, memory flat however many calls and transcripts the period holds; no
  objections (the bot's `/stats` shows none).
- `team_misses(managers)`: rubric items that managers skip: a manager skips an item when at
  least half of their scored verdicts on it are `missed`. Items skipped by at least one
  manager, most skipping managers first, with how many managers were scored at all.
- `weekly_averages(calls, week_starts)`: each manager's average score per week
  ([start, next start)), None for a week without a scored call.
- `fixes` (`Store.human_verdicts`: call id -> item id -> verdict): people's corrections, put
  in place of the model's verdicts with the score recomputed (`domain.with_corrections`), so
  every figure is the corrected one.
- A stored analysis that cannot be read is left out of the scores (it is not worth a failed
  report), and counted in `unreadable`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pydantic

from salesbot_poller.domain import MANAGER_UNKNOWN, CallAnalysis, answered, with_corrections
from salesbot_poller.store import Call, Store

CREDIT = {"done": 1.0, "partly": 0.5, "missed": 0.0}  # not_applicable, not_assessed: not scored


@dataclass
class ItemTally:
    """One manager's verdicts on one rubric item."""

    title: str
    credit: float = 0.0
    scored: int = 0
    missed: int = 0

    @property
    def share(self) -> float:
        return self.credit / self.scored if self.scored else 1.0


@dataclass
class ManagerFigures:
    name: str
    calls: int = 0
    talk_seconds: int = 0
    scores: list[int] = field(default_factory=list)
    score_total: int = 0  # scores summed by the database (`figures_in_store`), beside `scores`
    score_count: int = 0
    missed: int = 0
    returned: int = 0
    items: dict[str, ItemTally] = field(default_factory=dict)  # rubric item id -> tally, in order met
    previous: int | None = None  # the average of the period before, when the caller knows it
    weakest_call: tuple[int, str, str] | None = None  # the digest's: score, entity name, amoCRM link

    @property
    def average(self) -> int | None:
        count = len(self.scores) + self.score_count
        return round((sum(self.scores) + self.score_total) / count) if count else None

    @property
    def weakest(self) -> tuple[str, int] | None:
        """The weakest rubric item's title and share done (%), None when all were done."""
        scored = [(tally.share, -tally.scored, n, tally) for n, tally in enumerate(self.items.values()) if tally.scored]
        if not scored:
            return None
        share, _, _, tally = min(scored, key=lambda entry: entry[:3])
        return (tally.title, round(share * 100)) if share < 1.0 else None

    @property
    def change(self) -> int | None:
        """This period's average minus the previous one's, when both are known."""
        return None if self.average is None or self.previous is None else self.average - self.previous


@dataclass(frozen=True)
class TeamMiss:
    title: str
    skipping: int  # managers who skip the item
    of: int  # managers scored on any item


@dataclass
class Figures:
    managers: list[ManagerFigures]
    objections: list[str]  # every objection the clients raised, as the analyses stored them
    unreadable: int = 0


Fixes = Mapping[int, dict[str, str]]  # call id -> item id -> a person's verdict


def read_analysis(call: Call, fixes: Fixes | None = None) -> CallAnalysis | None:
    """The stored analysis of `call`, with its corrections in `fixes` applied; None when there
    is none or it cannot be read."""
    if not call.analysis_json:
        return None
    try:
        analysis = CallAnalysis.model_validate(json.loads(call.analysis_json))
    except (ValueError, pydantic.ValidationError):
        return None
    return with_corrections(analysis, fixes.get(call.id, {})) if fixes else analysis


def figures(calls: Iterable[Call], fixes: Fixes | None = None) -> Figures:
    """See the module contract."""
    managers: dict[str, ManagerFigures] = {}
    objections: list[str] = []
    unreadable = 0
    for call in calls:
        name = call.manager_name or MANAGER_UNKNOWN
        manager = managers.setdefault(name, ManagerFigures(name))
        if call.kind == "missed":
            manager.missed += 1
            manager.returned += call.callback_call_id is not None
            continue
        if not answered(call.duration, call.call_status):
            continue
        manager.calls += 1
        manager.talk_seconds += call.duration or 0
        analysis = read_analysis(call, fixes)
        if analysis is None:
            unreadable += bool(call.analysis_json)
            continue
        if analysis.score is not None:
            manager.scores.append(analysis.score)
        for item in analysis.rubric:
            tally = manager.items.setdefault(item.item_id, ItemTally(item.title))
            if item.verdict in CREDIT:
                tally.credit += CREDIT[item.verdict]
                tally.scored += 1
                tally.missed += item.verdict == "missed"
        objections.extend(o.objection.strip() for o in analysis.objections if o.objection.strip())
    ordered = sorted(managers.values(), key=lambda m: (-m.calls, -m.missed, m.name))
    return Figures(ordered, objections, unreadable)


def figures_in_store(store: Store, start: int, end: int) -> Figures:
    """See the module contract."""
    managers: dict[str, ManagerFigures] = {}
    unreadable = 0
    for row in store.manager_totals(start, end):
        name = row.manager or MANAGER_UNKNOWN  # None and "" are one manager, as in `figures`
        manager = managers.setdefault(name, ManagerFigures(name))
        manager.calls += row.calls
        manager.talk_seconds += row.talk_seconds
        manager.missed += row.missed
        manager.returned += row.returned
        manager.score_total += row.score_total
        manager.score_count += row.scored_calls
        unreadable += row.unreadable
    # In the order `figures` meets them (call id, then rubric position): `weakest` and
    # `team_misses` break ties by it, and an item's title is the one it had first.
    for totals in sorted(store.rubric_totals(start, end), key=lambda totals: totals.first):
        manager = managers[totals.manager or MANAGER_UNKNOWN]
        tally = manager.items.setdefault(totals.item_id, ItemTally(totals.title))
        tally.credit += totals.credit_halves / 2
        tally.scored += totals.scored
        tally.missed += totals.missed
    ordered = sorted(managers.values(), key=lambda m: (-m.calls, -m.missed, m.name))
    return Figures(ordered, [], unreadable)


def team_misses(managers: Sequence[ManagerFigures]) -> list[TeamMiss]:
    """See the module contract."""
    scored = [m for m in managers if any(t.scored for t in m.items.values())]
    skipping: dict[str, list[str]] = {}  # title -> managers
    for manager in scored:
        for tally in manager.items.values():
            if tally.scored and tally.missed * 2 >= tally.scored:
                skipping.setdefault(tally.title, []).append(manager.name)
    ranked = sorted(skipping.items(), key=lambda entry: -len(entry[1]))  # stable: rubric order on ties
    return [TeamMiss(title, len(names), len(scored)) for title, names in ranked]


def weekly_averages(
    calls: Iterable[Call], week_starts: Sequence[int], fixes: Fixes | None = None
) -> dict[str, list[int | None]]:
    """See the module contract. `week_starts` ascending; the last week ends a week after its start."""
    if not week_starts:
        return {}
    end = week_starts[-1] + 7 * 24 * 3600
    scores: dict[str, list[list[int]]] = {}
    for call in calls:
        if not week_starts[0] <= call.event_created_at < end:
            continue
        analysis = read_analysis(call, fixes)
        if analysis is None or analysis.score is None:
            continue
        week = max(n for n, start in enumerate(week_starts) if start <= call.event_created_at)
        per_week = scores.setdefault(call.manager_name or MANAGER_UNKNOWN, [[] for _ in week_starts])
        per_week[week].append(analysis.score)
    return {name: [round(sum(week) / len(week)) if week else None for week in weeks] for name, weeks in scores.items()}
