"""Telegram rendering: escaping, the 4096 limit, and what Telegram's HTML parser accepts."""

from __future__ import annotations

from datetime import UTC

import pytest

from salesbot_poller.domain import CallAnalysis, CallContext, NextStep, ObjectionHandling
from salesbot_poller.pipeline.messages import LIMIT, SUMMARY_CHARS, pack, render_conversation, render_missed
from tests.fakes import TelegramHTMLError, utf16_len, validate_telegram_html

CONTEXT = CallContext(
    direction="in",
    manager="Иван <Петров> & Co",
    entity_kind="leads",
    entity_name='ООО "Ромашка" <b>&amp;',
    entity_url="https://acme.amocrm.ru/leads/detail/7001",
    phone="+7 (999) 123-45-67",
    duration=245,
    started_at=1795600800,
)


def analysis(**changes: object) -> CallAnalysis:
    base = CallAnalysis(
        summary="Клиент спросил про цену <дорого> & долго",
        score=72,
        objections=[
            ObjectionHandling(objection="Дорого", handling="Скидка"),
            ObjectionHandling(objection="Надо подумать", handling=""),
        ],
        next_step=NextStep(action="Отправить КП до пятницы", due_date=None),
    )
    return base.model_copy(update=changes)


def test_card_escapes_every_dynamic_value_and_parses() -> None:
    (card,) = render_conversation(CONTEXT, analysis(), UTC)
    visible = validate_telegram_html(card)
    assert 'ООО "Ромашка" <b>&amp;' in visible, "the name shows literally, not as markup"
    assert "Иван <Петров> & Co" in visible
    assert "<дорого> & долго" in visible
    assert '<a href="https://acme.amocrm.ru/leads/detail/7001">' in card
    for expected in ("Входящий звонок", "4:05", "72", "+7 999 ***-**-67", "Надо подумать", "Отправить КП"):
        assert expected in visible
    assert "123-45" not in card, "a card masks the number by default (telegram.mask_phones)"


def test_unescaped_markup_would_be_rejected_by_the_test_parser() -> None:
    with pytest.raises(TelegramHTMLError):
        validate_telegram_html(f"<b>{CONTEXT.entity_name}</b>")


@pytest.mark.parametrize("filler", ["Очень длинный итог разговора. ", "<&>" * 3, "😀 эмодзи "])
def test_long_content_is_split_under_the_limit_and_every_part_parses(filler: str) -> None:
    objections = [ObjectionHandling(objection=filler * 300, handling="")] * 5
    needs = [filler * 20] * 10
    parts = render_conversation(CONTEXT, analysis(summary=filler * 900, objections=objections, client_needs=needs), UTC)
    assert len(parts) >= 2
    for part in parts:
        visible = validate_telegram_html(part)
        assert utf16_len(part) <= LIMIT and utf16_len(visible) <= LIMIT
    text = "".join(validate_telegram_html(p) for p in parts)
    # The summary is cut at SUMMARY_CHARS: all of that much shows, split or not.
    assert text.count(filler.strip()[:5]) >= SUMMARY_CHARS // len(filler) - 1, "nothing is lost in the split"
    assert "…" in text


def test_missed_call_alert_has_the_full_number_contact_and_manager() -> None:
    context = CallContext(
        "in",
        "Мария",
        "contacts",
        "Пётр & сын",
        "https://acme.amocrm.ru/contacts/detail/9",
        "+79991234567",
        0,
        1795600800,
    )
    (alert,) = render_missed(context, UTC)
    visible = validate_telegram_html(alert)
    assert "+7 999 123-45-67" in visible and "Пётр & сын" in visible and "Мария" in visible
    assert 'href="https://acme.amocrm.ru/contacts/detail/9"' in alert


def test_pack_keeps_blocks_whole() -> None:
    blocks = ["a" * 3000, "b" * 3000, "c" * 10]
    assert pack(blocks) == ["a" * 3000, "b" * 3000 + "\n\n" + "c" * 10]
