"""Issue 12 "Hostile input", the messages: values of any length or content from amoCRM or the
model never lose a card or an alert (cut with "…", cleaned, escaped, no empty part), and a storm
of missed calls becomes one summary message instead of thousands."""

from __future__ import annotations

import sqlite3
import time
import unicodedata
from datetime import UTC
from typing import Any

import pytest

from salesbot_poller.domain import CallAnalysis, CallContext, NextStep, ObjectionHandling, RubricResult
from salesbot_poller.pipeline.digest import ManagerDay, render_digest
from salesbot_poller.pipeline.messages import (
    LIMIT,
    NAME_CHARS,
    PHONE_CHARS,
    clean,
    esc,
    pack,
    render_callback,
    render_conversation,
    render_escalation,
    render_missed,
    render_transcript_caption,
    utf16_len,
)
from tests.conftest import CHAT_ID, Servers, run_cli
from tests.fakes import validate_telegram_html
from tests.hostile import values

LONG = values()["long_text"]
SURROGATE = values()["lone_surrogate"]
INJECTION = values()["html_injection"]
CONTROL = values()["control_chars"]
HOSTILE = (LONG, SURROGATE, INJECTION, CONTROL, "", "   \n\t ")


def context(value: str) -> CallContext:
    return CallContext(
        direction="in",
        manager=value,
        entity_kind="leads",
        entity_name=value,
        entity_url="https://acme.amocrm.ru/leads/detail/7001",
        phone=value,
        duration=125,
        started_at=1795600800,
    )


def analysis(value: str) -> CallAnalysis:
    return CallAnalysis(
        summary=value,
        topic=value,
        rubric=[
            RubricResult(item_id="greeting", title=value, weight=1, verdict="done", evidence=value, confidence=0.9)
        ],
        client_needs=[value] * 30,
        objections=[ObjectionHandling(objection=value, handling=value)] * 30,
        next_step=NextStep(action=value, due_date=None),
        risk_flags=[value] * 30,
        sentiment="negative",
        score=40,
    )


def assert_sendable(parts: list[str]) -> list[str]:
    """What Telegram would check of each part, and what JSON-encoding it needs; the visible texts."""
    assert parts, "a message with no part at all"
    visible = []
    for part in parts:
        part.encode("utf-8")  # a lone surrogate here would fail the request to Telegram
        assert utf16_len(part) <= LIMIT
        text = validate_telegram_html(part)
        assert text.strip(), "Telegram refuses an empty message"
        assert not any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in text)
        visible.append(text)
    return visible


@pytest.mark.parametrize("value", HOSTILE, ids=["long", "surrogate", "html", "control", "empty", "blank"])
def test_every_message_of_a_hostile_value_is_sendable_and_starts_with_its_header(value: str) -> None:
    card = assert_sendable(render_conversation(context(value), analysis(value), UTC))
    assert card[0].startswith("📥 Входящий звонок") and "Оценка" in card[0]
    alert = assert_sendable(render_missed(context(value), UTC))
    assert len(alert) == 1 and alert[0].startswith("🔴 Пропущенный звонок")
    (escalation,) = assert_sendable(render_escalation(context(value), 15, UTC))
    assert escalation.startswith("⏰")
    assert_sendable(render_callback(value, 1795600800 + 60, 1795600800, UTC))
    assert_sendable([render_transcript_caption(context(value), UTC)])
    day = ManagerDay(value, calls=1, scores=[40], weakest=(40, value, "https://acme.amocrm.ru/leads/detail/1"))
    assert_sendable(render_digest([day] * 3, 1795600800, 1795687200, UTC))


def test_names_and_phone_of_ten_thousand_characters_are_cut_with_an_ellipsis() -> None:
    (alert,) = render_missed(context(LONG), UTC)
    lines = validate_telegram_html(alert).splitlines()
    phone = lines[1].removeprefix("☎️ ").removesuffix(" — перезвоните клиенту")
    assert phone.endswith("…") and len(phone) <= PHONE_CHARS
    entity = lines[2].removeprefix("💼 Сделка: ")
    manager = lines[3].removeprefix("👤 Ответственный: ")
    for name in (entity, manager):
        assert name.endswith("…") and len(name) <= NAME_CHARS and name.startswith("Ромашка Ромашка")
    assert utf16_len(alert) < 600


def test_a_card_of_ten_thousand_character_fields_stays_a_few_messages() -> None:
    parts = render_conversation(context(LONG), analysis(LONG), UTC)
    # Cut fields: the summary, ten items a list (the rest counted), each item cut.
    assert len(parts) <= 4
    text = "\n".join(assert_sendable(parts))
    assert "… и ещё 22" in text and text.count("…") >= 10


def test_markup_and_control_characters_come_out_as_literal_text() -> None:
    value = f"{INJECTION} {CONTROL}"
    (alert,) = render_missed(context(value), UTC)
    visible = validate_telegram_html(alert)
    assert '<b>bold</b> & <a href="javascript:alert(1)">x</a> </code>' in visible
    assert "linezerobell[31mred" in visible
    assert alert.count("<a ") == 1 and '<a href="https://acme.amocrm.ru/leads/detail/7001">' in alert


def test_a_lone_surrogate_becomes_the_replacement_character() -> None:
    assert clean(SURROGATE) == "ООО \ufffd Ромашка"
    assert esc("a\udfff<") == "a\ufffd&lt;"
    assert utf16_len("\ud800") == 1  # counting never raises either
    (alert,) = render_missed(context(SURROGATE), UTC)
    assert "ООО \ufffd Ромашка" in validate_telegram_html(alert)


def test_pack_never_emits_an_empty_or_oversized_part() -> None:
    assert pack(["", "  ", "\n"]) == []
    head = "<b>head</b>"
    huge = "\n".join([head, "x" * 5000, *(["<i>line</i>"] * 1000)])
    parts = pack([huge, "tail"])
    assert parts[0].startswith(head)
    for part in parts:
        assert part.strip() and utf16_len(part) <= LIMIT
        validate_telegram_html(part)


def test_the_fake_telegram_refuses_an_empty_text_like_telegram(servers: Servers) -> None:
    from telebot import TeleBot, apihelper

    from tests.conftest import BOT_TOKEN

    apihelper.API_URL = servers.telegram.api_url
    bot = TeleBot(BOT_TOKEN, threaded=False)
    for text in ("", " \n ", "<b> </b>"):
        with pytest.raises(apihelper.ApiTelegramException, match="message text is empty"):
            bot.send_message(CHAT_ID, text, parse_mode="HTML")


def hostile_analysis(body: dict[str, Any]) -> dict[str, Any]:
    """The model's answer with every free-text field hostile (the rubric ids it was asked for)."""
    from tests.fakes.openai_api import default_analysis

    answer = default_analysis(body)
    text = f"{INJECTION} {CONTROL} {LONG}"
    for item in answer["rubric"]:
        item["evidence"] = text
    return answer | {
        "summary": text,
        "topic": text,
        "client_needs": [text] * 20,
        "objections": [{"objection": text, "handling": text}] * 20,
        "next_step": {"action": text, "due_date": None},
        "risk_flags": [text] * 20,
    }


@pytest.mark.slow
def test_cards_and_alerts_of_ten_thousand_character_values_go_out_through_the_cli(servers: Servers) -> None:
    from tests.fakes import make_mp3

    now = int(time.time())
    amo = servers.amo
    amo.add_user(555, LONG)
    amo.add_entity("lead", 7001, LONG + INJECTION, 555)
    amo.add_entity("lead", 7002, INJECTION + CONTROL, 555)
    amo.add_call(
        entity_type="lead",
        entity_id=7001,
        note_id=101,
        duration=0,
        phone=LONG,
        link=None,
        call_status=6,
        created_at=now - 300,
        responsible_user_id=555,
    )
    amo.add_call(
        entity_type="lead",
        entity_id=7002,
        note_id=102,
        duration=0,
        phone=CONTROL + INJECTION,
        link=None,
        call_status=6,
        created_at=now - 250,
        responsible_user_id=555,
    )
    amo.add_call(
        entity_type="lead",
        entity_id=7001,
        note_id=103,
        duration=125,
        phone=LONG,
        link=servers.recordings.add("/rec-103.mp3", make_mp3(2.0)),
        created_at=now - 200,
        responsible_user_id=555,
    )
    servers.openai.analysis_fn = hostile_analysis

    result = run_cli("once", config=servers.write_config())

    assert result.returncode == 0, result.stderr
    db = sqlite3.connect(servers.tmp / "state" / "salesbot.db")
    assert db.execute("SELECT key, error FROM delivery WHERE error IS NOT NULL").fetchall() == []
    assert sorted(stage for (stage,) in db.execute("SELECT stage FROM call")) == [
        "missed_alerted",
        "missed_alerted",
        "notified",
    ]
    texts = [m["text"] for m in servers.telegram.messages]
    visible = assert_sendable(texts)
    assert sum(t.startswith("🔴 Пропущенный звонок") for t in visible) == 2
    cards = [t for t in visible if t.startswith("📥 Входящий звонок")]
    assert len(cards) == 1 and "Оценка" in cards[0] and "Ромашка…" in cards[0]
    assert len(texts) <= 2 + 5, "each field cut: the card is a few parts, not dozens"
    assert any('<a href="javascript:alert(1)">x</a>' in t for t in visible)
