"""The analysis card, byte for byte, for a fixed analysis (tests/golden/card.html), and what
every rendered message must satisfy: Telegram's HTML parser and the 4096 limit.

To accept an intended change of the card: `UPDATE_GOLDEN=1 pytest tests/test_card_golden.py`,
then review the diff of the golden file."""

from __future__ import annotations

import os
from datetime import UTC
from pathlib import Path

import pytest

from salesbot_poller.domain import CallAnalysis, CallContext, NextStep, ObjectionHandling, RubricResult
from salesbot_poller.pipeline.messages import (
    LIMIT,
    render_callback,
    render_conversation,
    render_escalation,
    render_missed,
)
from tests.fakes import utf16_len, validate_telegram_html

GOLDEN = Path(__file__).parent / "golden" / "card.html"

CONTEXT = CallContext(
    direction="in",
    manager="Иван Петров",
    entity_kind="leads",
    entity_name="ООО «Ромашка» & Partners",
    entity_url="https://acme.amocrm.ru/leads/detail/7001",
    phone="+79991110001",
    duration=125,
    started_at=1795600800,  # 2026-11-25 10:00 UTC
)


def rubric(*verdicts: str) -> list[RubricResult]:
    titles = [
        ("greeting", "Приветствие и представление", "Добрый день, компания «Ромашка», меня зовут Иван"),
        ("needs", "Выявление потребностей", "Какой объём вам нужен и к какому сроку?"),
        ("presentation", "Презентация предложения", "Под ваш объём подойдёт тариф <Опт>"),
        ("objections", "Работа с возражениями", ""),
        ("next_step", "Договорённость о следующем шаге", "Пришлю КП до пятницы"),
        ("closing", "Завершение", ""),
    ]
    return [
        RubricResult(item_id=i, title=t, weight=1, verdict=v, evidence=e, confidence=0.9)  # type: ignore[arg-type]
        for (i, t, e), v in zip(titles, verdicts, strict=True)
    ]


ANALYSIS = CallAnalysis(
    summary="Клиент спросил о сроках поставки 2 т профиля; менеджер предложил оптовый тариф и обещал КП.",
    topic="поставка",
    rubric=rubric("done", "done", "partly", "missed", "done", "not_applicable"),
    client_needs=["Поставка до конца месяца", "Отсрочка платежа"],
    objections=[ObjectionHandling(objection="Дорого", handling="Предложил скидку за объём")],
    next_step=NextStep(action="Отправить КП", due_date="2026-11-27"),
    risk_flags=["Клиент сравнивает с конкурентом"],
    sentiment="positive",
    score=70,
)


def test_the_card_matches_the_golden_file() -> None:
    (card,) = render_conversation(CONTEXT, ANALYSIS, UTC)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(card, encoding="utf-8")
    assert card == GOLDEN.read_text(encoding="utf-8")
    visible = validate_telegram_html(card)
    for expected in ("70/100", "▰▰▰▰▰▰▰▱▱▱", "#поставка", "Иван Петров", "ООО «Ромашка» & Partners", "2:05"):
        assert expected in visible
    assert "❌ Работа с возражениями" in visible and "Дорого → Предложил скидку за объём" in visible
    assert "Отправить КП · до 27.11.2026" in visible and "тариф <Опт>" in visible
    assert "☎️ +7 999 ***-**-01" in visible and "+79991110001" not in card, "telegram.mask_phones defaults to cards"


def test_the_metrics_line_is_shown_under_the_score_when_given() -> None:
    (card,) = render_conversation(CONTEXT, ANALYSIS, UTC, metrics="🎙 Менеджер говорил 62% времени")
    lines = validate_telegram_html(card).splitlines()
    assert lines[lines.index(next(line for line in lines if "Оценка" in line)) + 1] == "🎙 Менеджер говорил 62% времени"


def test_a_card_where_nothing_applied_says_so_instead_of_a_score() -> None:
    analysis = ANALYSIS.model_copy(update={"rubric": rubric(*["not_applicable"] * 6), "score": None})
    (card,) = render_conversation(CONTEXT, analysis, UTC)
    assert "Оценка: — (пункты скрипта неприменимы)" in validate_telegram_html(card)


@pytest.mark.parametrize("filler", ["Очень длинный итог. ", "<&>" * 3, "😀 эмодзи ", "<b>не тег</b> "])
def test_every_part_of_a_long_card_parses_and_fits(filler: str) -> None:
    long = ANALYSIS.model_copy(
        update={
            "summary": filler * 700,
            "client_needs": [filler * 50] * 20,
            "objections": [ObjectionHandling(objection=filler * 100, handling=filler * 100)] * 8,
            "risk_flags": [filler * 200] * 3,
            "rubric": [r.model_copy(update={"evidence": filler * 40}) for r in ANALYSIS.rubric],
        }
    )
    parts = render_conversation(CONTEXT, long, UTC)
    assert len(parts) >= 3
    for part in parts:
        assert utf16_len(part) <= LIMIT
        validate_telegram_html(part)


def test_every_missed_call_message_parses() -> None:
    for parts in (
        render_missed(CONTEXT, UTC),
        render_escalation(CONTEXT, 15, UTC),
        render_callback("Мария <Старшая> & Co", CONTEXT.started_at + 360, CONTEXT.started_at, UTC),
    ):
        for part in parts:
            validate_telegram_html(part)
