"""The sales-script rubric: the answer schema the model must follow, and the score.

Contract:
- `answer_model(items)` is `domain.AnalysisAnswer` with `rubric[].item_id` narrowed to the
  configured ids (an enum in the strict JSON schema).
- `check_answer(answer, items)` raises `ValueError` unless every configured item has exactly
  one verdict; the analyser re-asks once with that text.
- `total_score(results)` is the score 0..100, computed here, never by the model: each item's
  weight times its value (done 1, partly 0.5, missed 0), divided by the weights of the items
  that apply, rounded half up; "not applicable" items are left out of both sums. None when
  no item applies.
"""

from __future__ import annotations

import math
from typing import Any, Literal, cast

from pydantic import Field, create_model

from salesbot_poller.config import RubricItem
from salesbot_poller.domain import AnalysisAnswer, CallAnalysis, RubricResult, RubricVerdict

VERDICT_VALUE = {"done": 1.0, "partly": 0.5, "missed": 0.0}


def answer_model(items: tuple[RubricItem, ...]) -> type[AnalysisAnswer]:
    """`AnalysisAnswer` whose rubric item ids must be one of `items`' ids."""
    ids = tuple(item.id for item in items)
    item_id = cast(Any, Literal.__getitem__(ids))  # Literal["greeting", "needs", ...]
    verdict = create_model(
        "RubricVerdict",
        __base__=RubricVerdict,
        item_id=(item_id, Field(description="id пункта скрипта")),
    )
    model = create_model(
        "AnalysisAnswer",
        __base__=AnalysisAnswer,
        rubric=(list[verdict], Field(description="Вердикт по каждому пункту скрипта, ровно один на пункт")),
    )
    return model


def check_answer(answer: AnalysisAnswer, items: tuple[RubricItem, ...]) -> None:
    """Raise ValueError naming what is wrong unless each item has exactly one verdict."""
    seen = [verdict.item_id for verdict in answer.rubric]
    missing = [item.id for item in items if item.id not in seen]
    doubled = sorted({i for i in seen if seen.count(i) > 1})
    problems = []
    if missing:
        problems.append(f"rubric: no verdict for {', '.join(missing)}")
    if doubled:
        problems.append(f"rubric: more than one verdict for {', '.join(doubled)}")
    if problems:
        raise ValueError("; ".join(problems))


def total_score(results: list[RubricResult]) -> int | None:
    """See the module contract."""
    applicable = [r for r in results if r.verdict in VERDICT_VALUE]
    weights = sum(r.weight for r in applicable)
    if not applicable or weights <= 0:
        return None
    earned = sum(r.weight * VERDICT_VALUE[r.verdict] for r in applicable)
    return math.floor(100 * earned / weights + 0.5)  # half up: 62.5 -> 63, not banker's 62


def to_analysis(answer: AnalysisAnswer, items: tuple[RubricItem, ...]) -> CallAnalysis:
    """The stored analysis: verdicts in rubric order with titles and weights, and the score."""
    by_id = {verdict.item_id: verdict for verdict in answer.rubric}
    results = [
        RubricResult(
            item_id=item.id,
            title=item.title,
            weight=item.weight,
            verdict=by_id[item.id].verdict,
            evidence=by_id[item.id].evidence.strip(),
            confidence=by_id[item.id].confidence,
        )
        for item in items
    ]
    return CallAnalysis(
        summary=answer.summary,
        topic=answer.topic,
        rubric=results,
        client_needs=answer.client_needs,
        objections=answer.objections,
        next_step=answer.next_step,
        risk_flags=answer.risk_flags,
        sentiment=answer.sentiment,
        score=total_score(results),
    )


def describe(items: tuple[RubricItem, ...]) -> str:
    """The rubric as the prompt lists it: `- id: title — what counts as done`."""
    lines = []
    for item in items:
        done = f" — выполнено, если {item.done_when}" if item.done_when else ""
        lines.append(f"- {item.id}: {item.title}{done}")
    return "\n".join(lines)
