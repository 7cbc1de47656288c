"""The team's figures for a period, counted by the database: what the weekly report, the
digest and `/stats` say (issue 29: no call row, transcript nor analysis is loaded for them).

Contract:
- `figures_in_store(store, start, end)`: per manager (`Call.manager_name`, else
  `MANAGER_UNKNOWN`; None and "" are one manager) of the classified calls that happened in
  [start, end) (`Store.manager_totals`, `Store.rubric_totals`): answered calls
  (`domain.answered`) and their talk time; scores of analysed calls (None scores left out);
  missed incoming calls and how many were returned (`callback_call_id`); per rubric item how
  the manager did it: done counts 1, partly ½, missed 0; `not_applicable` and `not_assessed`
  are not scored. Busiest manager first (calls, then missed calls, then name). Memory stays
  flat however many calls and transcripts the period holds.
- `ManagerFigures.weakest`: the item with the lowest share done (below 100%), with that share;
  ties go to the item scored more often, then to the one met first (call id, rubric position),
  whose title it keeps.
- `averages_in_store(store, start, end)`: each manager's average score over [start, end)
  (the weekly report's "change against the week before").
- `team_misses(managers)`: rubric items that managers skip: a manager skips an item when at
  least half of their scored verdicts on it are `missed`. Items skipped by at least one
  manager, most skipping managers first, with how many managers were scored at all.
- `weekly_averages_in_store(store, week_starts, end)`: each manager's average score per week
  ([start, next start), the last week up to `end`) over calls of any kind with a score, None
  for a week without one; managers in the order their first scored call came (time, id).
- A stored analysis that cannot be read has no BI rows: it is left out of the scores (it is
  not worth a failed report), and counted in `unreadable`.
- `read_analysis(call)`: one call's stored analysis (its card, `/call`), None when unreadable.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import pydantic

from salesbot_poller.domain import MANAGER_UNKNOWN, CallAnalysis
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
    scores: list[int] = field(default_factory=list)  # scores given one by one (figures built by hand)
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
    unreadable: int = 0


def read_analysis(call: Call) -> CallAnalysis | None:
    """The stored analysis of `call`; None when there is none or it cannot be read."""
    if not call.analysis_json:
        return None
    try:
        return CallAnalysis.model_validate(json.loads(call.analysis_json))
    except (ValueError, pydantic.ValidationError):
        return None


def figures_in_store(store: Store, start: int, end: int) -> Figures:
    """See the module contract."""
    managers: dict[str, ManagerFigures] = {}
    unreadable = 0
    for row in store.manager_totals(start, end):
        name = row.manager or MANAGER_UNKNOWN  # None and "" are one manager
        manager = managers.setdefault(name, ManagerFigures(name))
        manager.calls += row.calls
        manager.talk_seconds += row.talk_seconds
        manager.missed += row.missed
        manager.returned += row.returned
        manager.score_total += row.score_total
        manager.score_count += row.scored_calls
        unreadable += row.unreadable
    # In the order the calls met them (call id, then rubric position): `weakest` and
    # `team_misses` break ties by it, and an item's title is the one it had first.
    for totals in sorted(store.rubric_totals(start, end), key=lambda totals: totals.first):
        manager = managers[totals.manager or MANAGER_UNKNOWN]
        tally = manager.items.setdefault(totals.item_id, ItemTally(totals.title))
        tally.credit += totals.credit_halves / 2
        tally.scored += totals.scored
        tally.missed += totals.missed
    ordered = sorted(managers.values(), key=lambda m: (-m.calls, -m.missed, m.name))
    return Figures(ordered, unreadable)


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


def averages_in_store(store: Store, start: int, end: int) -> dict[str, int | None]:
    """See the module contract."""
    totals: dict[str, list[int]] = {}  # name -> [score total, scored calls]
    for row in store.manager_totals(start, end):
        total = totals.setdefault(row.manager or MANAGER_UNKNOWN, [0, 0])
        total[0] += row.score_total
        total[1] += row.scored_calls
    return {name: round(total / count) if count else None for name, (total, count) in totals.items()}


def weekly_averages_in_store(store: Store, week_starts: Sequence[int], end: int) -> dict[str, list[int | None]]:
    """See the module contract. `week_starts` ascending; the last week ends at `end`."""
    weeks = store.week_scores(week_starts, end) if week_starts else []
    firsts: dict[str | None, int] = {}  # manager_name -> the time of its first scored call
    for row in weeks:
        firsts[row.manager] = min(row.first_at, firsts.get(row.manager, row.first_at))
    ids = store.first_scored_ids(firsts.values())
    order: dict[str, tuple[int, int]] = {}  # name -> its first scored call's (time, id)
    sums: dict[str, list[list[int]]] = {}
    for row in weeks:
        name = row.manager or MANAGER_UNKNOWN  # None and "" are one manager
        first = (firsts[row.manager], ids[(row.manager, firsts[row.manager])])
        order[name] = min(first, order.get(name, first))
        week = sums.setdefault(name, [[0, 0] for _ in week_starts])[row.week]
        week[0] += row.score_total
        week[1] += row.scored_calls
    ordered = sorted(order, key=lambda name: order[name])
    return {name: [round(total / count) if count else None for total, count in sums[name]] for name in ordered}
