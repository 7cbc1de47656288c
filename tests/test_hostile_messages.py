"""Hostile input, the messages: values of any length or content from amoCRM or the
model never lose a card or an alert (cut with "…", cleaned, escaped, no empty part), and a storm
of missed calls becomes one summary message instead of thousands."""

from __future__ import annotations

import sqlite3
import time
import unicodedata
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from salesbot_poller.domain import (
    CallAnalysis,
    CallContext,
    Destination,
    NextStep,
    ObjectionHandling,
    RubricResult,
    Stage,
)
from salesbot_poller.errors import ConfigError, TransientError
from salesbot_poller.lanes import run_once, send_alerts
from salesbot_poller.pipeline import storm
from salesbot_poller.pipeline.context import Cycle
from salesbot_poller.pipeline.intake import poll, resolve_new
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
from salesbot_poller.reports.digest import render_digest
from salesbot_poller.reports.team_stats import ManagerFigures
from salesbot_poller.store import Call, Migration
from tests.builder import Rig, already_running, build_rig, database_already_running
from tests.conftest import CHAT_ID, Servers, run_cli
from tests.fakes import validate_telegram_html
from tests.hostile import values
from tests.loopback_app import add_call, at, calls, ts

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
    day = ManagerFigures(value, calls=1, scores=[40], weakest_call=(40, value, "https://acme.amocrm.ru/leads/detail/1"))
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

    apihelper.API_URL = servers.telegram.api_url  # type: ignore[assignment]  # telebot types it None
    bot = TeleBot(BOT_TOKEN, threaded=False)
    for text in ("", " \n ", "<b> </b>"):
        with pytest.raises(apihelper.ApiTelegramException, match="message text is empty"):
            bot.send_message(CHAT_ID, text, parse_mode="HTML")


def hostile_analysis(body: dict[str, Any]) -> dict[str, Any]:
    """The model's answer with every free-text field hostile (the rubric ids it was asked for)."""
    from tests.fakes.openai_api import default_analysis

    answer = default_analysis(body)
    text = f"{INJECTION} {CONTROL} {LONG}"
    for item in answer["rubric"].values():
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
        phone=LONG + "+79990001122",  # a missed-call alert needs a number to call back
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
        phone=CONTROL + INJECTION + "+79990001123",
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

    config = servers.write_config()
    database_already_running(servers.database, now - 7200)  # a running daemon: alerts one by one
    result = run_cli("once", config=config)

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


# --- Row B: a storm of missed calls -------------------------------------------------------------

ALERT_CHAT = "-1007777"


def storm_rig(tmp_path: Path, cap: int = 3, **sections: Any) -> Rig:
    telegram = {"max_alerts_per_cycle": cap, "alert_chat_id": ALERT_CHAT} | sections.pop("telegram", {})
    rig = build_rig(tmp_path, telegram=telegram, **sections)
    already_running(rig.app)  # a storm while running, not the first start's look-back (`catchup`)
    return rig


def add_missed(rig: Rig, count: int, *, minutes: float = -2, phone: str | None = None) -> None:
    for n in range(1, count + 1):
        add_call(rig, n, minutes=minutes, duration=0, status=6, phone=phone or f"+7999000{n:04d}")


def test_up_to_the_cap_each_missed_call_gets_its_own_alert(tmp_path: Path) -> None:
    rig = storm_rig(tmp_path, cap=3)
    add_missed(rig, 3)
    run_once(rig.app, at(0))
    assert len(rig.notifier.sent) == 3 and all("Пропущенный звонок" in m for m in rig.notifier.sent)
    assert [c.summarised_in for c in calls()] == [None] * 3


def test_one_over_the_cap_makes_one_summary_to_the_alert_chat_and_every_call_is_kept(tmp_path: Path) -> None:
    rig = storm_rig(tmp_path, cap=3)
    add_missed(rig, 4)
    run_once(rig.app, at(0))
    ((_, to, reply_to, text),) = rig.notifier.log
    assert to == Destination(ALERT_CHAT) and reply_to is None
    visible = validate_telegram_html(text)
    assert "Шквал пропущенных звонков: 4" in visible and "Больше 3 за раз" in visible
    assert all(f"+7 999 000-{n // 100:02d}-{n % 100:02d}" in visible for n in range(1, 5))
    stored = calls()
    assert [(c.stage, c.summarised_in) for c in stored] == [("missed_alerted", "storm:1-4")] * 4
    run_once(rig.app, at(1))
    assert len(rig.notifier.sent) == 1, "sent once"


def test_the_summary_lists_the_first_twenty_numbers_cut_and_escaped(tmp_path: Path) -> None:
    rig = storm_rig(tmp_path, cap=3)
    # Digits at the end: a missed call is alerted only with a number to call back.
    add_missed(rig, 25, phone=f"{INJECTION}{CONTROL}{LONG}+79990001122")
    run_once(rig.app, at(0))
    (text,) = rig.notifier.sent
    visible = assert_sendable([text])[0]
    lines = [line for line in visible.splitlines() if line.startswith("☎️")]
    assert len(lines) == 20 and "… и ещё 5" in visible
    assert lines[0].startswith('☎️ <b>bold</b> & <a href="javascript:alert…')
    assert utf16_len(text) < 3000


def test_a_summary_telegram_did_not_take_is_sent_on_the_next_pass_once(tmp_path: Path) -> None:
    rig = storm_rig(tmp_path, cap=3)
    rig.notifier.failures[1] = TransientError("Telegram sendMessage: HTTP 502")
    add_missed(rig, 5)
    run_once(rig.app, at(0))
    assert rig.notifier.sent == [] and all(c.summarised_in == "storm:1-5" for c in calls())
    run_once(rig.app, at(1))
    run_once(rig.app, at(2))
    assert len(rig.notifier.sent) == 1 and "Шквал пропущенных звонков: 5" in rig.notifier.sent[0]


def test_a_process_stopped_between_marking_and_sending_sends_the_summary_at_the_next_start(tmp_path: Path) -> None:
    rig = storm_rig(tmp_path, cap=3)
    add_missed(rig, 5)
    # What a crash right after the commit leaves: the summary stored, the calls marked, nothing sent.
    cycle = Cycle(app=rig.app, now=ts(0))
    poll(rig.app, cycle)
    resolve_new(rig.app, cycle)
    due = rig.app.store.due_calls(ts(0), [Stage.MISSED], kind="missed")
    rig.app.store.summarise([storm.plan(rig.app, due)], due, ts(0))
    assert rig.notifier.sent == []
    run_once(rig.app, at(1))
    run_once(rig.app, at(2))
    assert len(rig.notifier.sent) == 1 and "Шквал пропущенных звонков: 5" in rig.notifier.sent[0]


def test_a_summarised_call_gets_no_escalation_and_its_callback_is_still_counted(tmp_path: Path) -> None:
    rig = storm_rig(tmp_path, cap=3, poller={"missed_call_sla_minutes": 15})
    add_missed(rig, 4)
    run_once(rig.app, at(0))
    run_once(rig.app, at(30))  # well past the SLA
    assert len(rig.notifier.sent) == 1, "no escalation per summarised call"
    add_call(rig, 9, minutes=31, direction="out", duration=95, phone="+79990000001")
    run_once(rig.app, at(32))
    assert not any("Перезвонили" in m or "Не перезвонили" in m for m in rig.notifier.sent)
    first = calls()[0]
    assert first.callback_call_id == calls()[-1].id, "the digest counts it returned"


def test_a_dry_run_prints_the_summary_and_marks_nothing(tmp_path: Path) -> None:
    printed: list[str] = []
    rig = build_rig(tmp_path, dry_run=printed, telegram={"max_alerts_per_cycle": 3})
    add_missed(rig, 4)
    run_once(rig.app, at(0))
    assert rig.notifier.sent == []
    assert sum("storm:1-4" in p for p in printed) == 1 and not any("[call:" in p for p in printed)
    assert {c.stage for c in calls()} == {"missed"} and {c.summarised_in for c in calls()} == {None}


@pytest.mark.slow
def test_ten_thousand_due_missed_calls_are_one_message_in_the_store(tmp_path: Path) -> None:
    count = values()["alert_storm"]
    rig = storm_rig(tmp_path, cap=30)
    now = ts(0)
    rows = [
        {
            "event_id": f"e{n}",
            "direction": "in",
            "entity_type": "leads",
            "entity_id": n,
            "note_id": n,
            "event_created_at": now - count + n,
            "first_seen_at": now,
            "updated_at": now,
            "stage": "missed",
            "kind": "missed",
            "phone": f"+7999{n:07d}",
            "manager_name": "Иван Петров",
        }
        for n in range(count)
    ]
    with rig.app.store.db.atomic():
        for start in range(0, count, 500):
            Call.insert_many(rows[start : start + 500]).execute()
    send_alerts(rig.app, Cycle(app=rig.app, now=now), lambda: False)  # the time: benchmarks/hostile.py
    assert len(rig.notifier.sent) == 1 and f"Шквал пропущенных звонков: {count}" in rig.notifier.sent[0]
    assert rig.app.store.stage_counts() == {"missed_alerted": count}
    assert rig.app.store.due_calls(now, [Stage.MISSED], kind="missed") == []


def test_migration_0009_adds_the_summary_mark_to_a_database_of_the_previous_schema(tmp_path: Path) -> None:
    rig = storm_rig(tmp_path)
    db = rig.app.store.db
    db.execute_sql("ALTER TABLE call DROP COLUMN summarised_in")  # type: ignore[no-untyped-call]
    Migration.delete().where(Migration.name == "0009_storm").execute()
    assert rig.app.store.migrate(ts(0)) == ["0009_storm"]
    assert "summarised_in" in {column.name for column in db.get_columns("call")}


def add_missed_calls(servers: Servers, count: int, first_at: int) -> None:
    """`count` missed incoming calls, a few a second from `first_at`, on 400 leads of one manager."""
    amo = servers.amo
    amo.add_user(555, "Иван Петров")
    for n in range(count):
        entity_id = 25_000_000 + n % 400
        amo.add_entity("lead", entity_id, f"Сделка {entity_id}", 555)
        amo.add_call(
            entity_id=entity_id,
            note_id=1_200_000_000 + n,
            duration=0,
            phone=f"+7999{n:07d}",
            link=None,
            call_status=6,
            created_at=first_at + n // 4,
            responsible_user_id=555,
        )


@pytest.mark.slow
def test_ten_thousand_missed_calls_in_one_poll_are_one_message_through_the_cli(servers: Servers) -> None:
    # Measured: 10,000 missed calls, 1 message, about 35 s (most of it reading 10,000 notes from
    # the fake amoCRM); before the cap, a message each.
    count = values()["alert_storm"]
    add_missed_calls(servers, count, int(time.time()) - 3000)
    config = servers.write_config()
    result = run_cli("once", config=config, timeout=300)
    assert result.returncode == 0, result.stderr
    (summary,) = servers.telegram.messages
    assert summary["chat_id"] == CHAT_ID  # no alert_chat_id: the default chat
    visible = validate_telegram_html(summary["text"])
    assert f"Шквал пропущенных звонков: {count}" in visible and f"… и ещё {count - 20}" in visible
    assert "+7 999 000-00-00" in visible and "+7 999 000-00-19" in visible and "+7 999 000-00-20" not in visible
    db = sqlite3.connect(servers.tmp / "state" / "salesbot.db")
    assert db.execute("SELECT stage, summarised_in, COUNT(*) FROM call GROUP BY 1, 2").fetchall() == [
        ("missed_alerted", f"storm:1-{count}", count)
    ]
    again = run_cli("once", config=config, timeout=300)
    assert again.returncode == 0, again.stderr
    assert len(servers.telegram.messages) == 1, "the summary goes out once"


def test_max_alerts_per_cycle_defaults_to_thirty_and_must_be_at_least_one(tmp_path: Path) -> None:
    assert build_rig(tmp_path).app.config.telegram.max_alerts_per_cycle == 30
    with pytest.raises(ConfigError, match=r"telegram\.max_alerts_per_cycle"):
        build_rig(tmp_path, telegram={"max_alerts_per_cycle": 0})
