"""The sales-script rubric: the answer schema the model must follow, and the score.

Contract:
- `answer_model(items)` is `domain.AnalysisAnswer` plus `rubric`: an object with one
  required property per configured item id (each a `domain.ItemVerdict`), so a server that
  enforces the strict schema cannot leave an item out or give it twice.
- With a closed topic list (`choices`, `config.topic_choices`), `topic` is an enum of
  those names; `closed_topic(value, choices)` maps what a server that does not enforce the
  schema answered onto the list: the listed name equal ignoring case, spaces and ё/е, else
  `OTHER_TOPIC`. A value outside the list is never kept.
- `to_analysis(reading, items)` is the stored analysis: the verdicts in rubric order with
  titles and weights; an item the answer did not assess (`answer_reader`) is "not_assessed".
- `total_score(results)` is the score 0..100, computed here, never by the model: each item's
  weight times its value (done 1, partly 0.5, missed 0), divided by the weights of the items
  that were assessed and apply, rounded half up; "not applicable" and "not assessed" items
  are left out of both sums. None when no item counts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from salesbot_poller.config import RubricItem
from salesbot_poller.domain import (
    OTHER_TOPIC,
    AnalysisAnswer,
    CallAnalysis,
    ItemVerdict,
    RubricResult,
    rubric_score,
)
from salesbot_poller.services.answer_reader import Reading


def answer_model(items: tuple[RubricItem, ...], choices: tuple[str, ...] = ()) -> type[BaseModel]:
    """See the module contract. Fields are named `item_<id>` with the id as alias: an id
    such as "model_fit" must not collide with pydantic's own names. `choices`: the closed
    topic list (() keeps the free topic)."""
    verdicts: dict[str, object] = {
        f"item_{item.id}": (ItemVerdict, Field(alias=item.id, description=item.title)) for item in items
    }
    rubric = create_model(  # type: ignore[call-overload]
        "Rubric", __config__=ConfigDict(extra="forbid", populate_by_name=True), **verdicts
    )
    closed: dict[str, object] = {}
    if choices:
        topic_type = Literal[choices]  # type: ignore[valid-type]  # an enum of the configured names
        closed["topic"] = (topic_type, Field(description="Тема звонка: ровно одно значение из списка"))
    model: type[BaseModel] = create_model(  # type: ignore[call-overload]
        "AnalysisAnswer",
        __base__=AnalysisAnswer,
        rubric=(rubric, Field(description="Вердикт по каждому пункту скрипта: ключ — id пункта")),
        **closed,
    )
    return model


def topic_key(text: str) -> str:
    """A topic as compared with the list's names: case, spaces and ё/е ignored."""
    return " ".join(text.casefold().replace("ё", "е").split())


def _listed(key: str, choices: tuple[str, ...]) -> str | None:
    return next((choice for choice in choices if topic_key(choice) == key), None)


def other_topic(choices: tuple[str, ...]) -> str:
    """The catch-all as `choices` spell it (a list may name "другое" itself)."""
    return _listed(topic_key(OTHER_TOPIC), choices) or OTHER_TOPIC


def closed_topic(value: str, choices: tuple[str, ...]) -> str:
    """See the module contract."""
    return _listed(topic_key(value), choices) or other_topic(choices)


def total_score(results: list[RubricResult]) -> int | None:
    """See the module contract (`domain.rubric_score`: corrections recompute it the same way)."""
    return rubric_score(results)


def to_analysis(reading: Reading, items: tuple[RubricItem, ...]) -> CallAnalysis:
    """See the module contract."""
    results = []
    for item in items:
        verdict = reading.verdicts.get(item.id)
        results.append(
            RubricResult(item_id=item.id, title=item.title, weight=item.weight, verdict="not_assessed")
            if verdict is None
            else RubricResult(
                item_id=item.id,
                title=item.title,
                weight=item.weight,
                verdict=verdict.verdict,
                evidence=verdict.evidence.strip(),
                confidence=verdict.confidence,
            )
        )
    return CallAnalysis(
        summary=reading.summary,
        topic=reading.topic,
        rubric=results,
        client_needs=reading.client_needs,
        objections=reading.objections,
        next_step=reading.next_step,
        risk_flags=reading.risk_flags,
        sentiment=reading.sentiment,
        score=total_score(results),
        summary_missing=not reading.usable,
    )


def describe(items: tuple[RubricItem, ...]) -> str:
    """The rubric as the prompt lists it: `- id: title — what counts as done`."""
    lines = []
    for item in items:
        done = f" — выполнено, если {item.done_when}" if item.done_when else ""
        lines.append(f"- {item.id}: {item.title}{done}")
    return "\n".join(lines)
