"""The weekly report's line on how often the model agreed with the head of sales' corrections.

Contract of `agreement_line(checks)` (`week_line(store, start, end)` reads the checks of
[start, end) from the store): `checks` are the verdicts people set that week (one per
call and rubric item, the last one set: `Check(title, model, human)`). The line says in how many
the model's verdict was the one the person chose, and the item the model was most often
overruled on (ties: the item first met); "" when nobody corrected anything that week, so the
report shows no line. E.g. "🧑‍⚖️ Модель согласна с вашими исправлениями: 41 из 48 (85 %); чаще
всего ошибается: Работа с возражениями (5)".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from salesbot_poller.pipeline.messages import esc
from salesbot_poller.store import Store


@dataclass(frozen=True)
class Check:
    """A verdict a person set on one item of one call, beside the model's."""

    title: str
    model: str
    human: str


def agreement_line(checks: Sequence[Check]) -> str:
    """See the module contract (HTML: titles are escaped)."""
    if not checks:
        return ""
    agreed = sum(1 for check in checks if check.model == check.human)
    share = round(100 * agreed / len(checks))
    line = f"🧑‍⚖️ Модель согласна с вашими исправлениями: {agreed} из {len(checks)} ({share} %)"
    overruled = Counter(check.title for check in checks if check.model != check.human)
    if overruled:
        title, count = overruled.most_common(1)[0]  # Counter keeps first-met order among ties
        line += f"; чаще всего ошибается: {esc(title)} ({count})"
    return line


def week_line(store: Store, start: int, end: int) -> str:
    """The line for the corrections made in [start, end); "" when there were none."""
    return agreement_line([Check(*row) for row in store.correction_checks(start, end)])
