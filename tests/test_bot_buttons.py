"""The card's buttons through the real telebot client against the loopback Telegram: a real
card with its buttons, real `callback_query` updates read by `getUpdates`, answered with
answerCallbackQuery, the card edited in place (editMessageReplyMarkup, editMessageText), the
corrected score in the BI tables and in the amoCRM lead field exactly once; a stranger's
press, a forged button and a press met again after a restart change nothing."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest

from salesbot_poller import bot_callbacks
from salesbot_poller import bot_lane as bot
from salesbot_poller.app import build_updates
from salesbot_poller.domain import CallAnalysis, CallContext, RubricResult, rubric_score
from salesbot_poller.lanes import run_once
from salesbot_poller.pipeline import buttons
from salesbot_poller.store import BiCall, BiRubricItem, Call, Store, VerdictCorrection
from tests.builder import Rig
from tests.conftest import CHAT_ID, Servers
from tests.loopback_app import at, loopback_rig
from tests.test_lead_fields import FIELDS, SCORE, account, add, patches

BOSS, STRANGER, MANAGER = 4242, 777, 5050
LEAD = 7001


def analysis(transcript: str, context: CallContext) -> CallAnalysis:
    rubric = [
        RubricResult(item_id="greeting", title="Приветствие", weight=1, verdict="done", evidence="Добрый день",
                     verified=True, at=4),
        RubricResult(item_id="needs", title="Выявление потребностей", weight=1, verdict="missed",
                     evidence="Что вам нужно", verified=True, at=150),
        RubricResult(item_id="closing", title="Завершение", weight=2, verdict="partly"),
    ]  # fmt: skip
    return CallAnalysis(summary="Клиент спросил цену.", rubric=rubric, score=rubric_score(rubric))


@pytest.fixture
def rig(servers: Servers) -> Rig:
    account(servers, LEAD)
    telegram = {
        "command_chats": [CHAT_ID],
        "admins": [BOSS],
        "managers_may_correct": True,
        "user_ids": {"555": MANAGER},
    }
    rig = loopback_rig(servers, paced=False, telegram=telegram, amocrm=FIELDS)
    rig.app.updates = build_updates(rig.app.config)
    rig.analyzer.analyse = analysis  # type: ignore[method-assign]
    add(rig, 1, LEAD, minutes=-10)
    run_once(rig.app, at(0))
    run_once(rig.app, at(10))
    return rig


def card(servers: Servers) -> dict[str, Any]:
    (message,) = [m for m in servers.telegram.messages if m["reply_markup"]]
    return message


def shown(servers: Servers, message_id: int) -> list[list[str]]:
    rows = servers.telegram.markup[(CHAT_ID, message_id)] or []
    return [[button["text"] for button in row] for row in rows]


def data_of(servers: Servers, message_id: int, text: str) -> str:
    for row in servers.telegram.markup[(CHAT_ID, message_id)]:
        for button in row:
            if button["text"] == text:
                return str(button["callback_data"])
    raise AssertionError(f"no button {text!r}")


def tap(rig: Rig, servers: Servers, message_id: int, data: str, user: int = BOSS, **kw: Any) -> str:
    """Press a button as `user`; let the bot lane read and take it; the answer's text."""
    before = len(servers.telegram.answers)
    servers.telegram.MAX_LONG_POLL = 0.0
    servers.telegram.press(CHAT_ID, message_id, user, data, **kw)
    while updates := bot.fetch(rig.app, 0):
        for update in updates:
            bot.take(rig.app, update, int(time.time()), bot.CommandLimits())
    answers = servers.telegram.answers[before:]
    return str(answers[-1].get("text", "")) if answers else "<no answer>"


def test_the_card_has_a_button_per_timed_quote_and_one_to_correct(rig: Rig, servers: Servers) -> None:
    message = card(servers)
    assert shown(servers, message["message_id"]) == [
        ["▶️ Приветствие 00:04", "▶️ Выявление потребн… 02:30"],
        ["✏️ Исправить"],
    ]
    assert patches(servers) == 1 and servers.amo.lead_field(LEAD, SCORE) == 50


def test_a_correction_changes_the_card_the_score_the_bi_row_and_the_amocrm_field_once(
    rig: Rig, servers: Servers
) -> None:
    message_id = card(servers)["message_id"]
    assert tap(rig, servers, message_id, data_of(servers, message_id, "✏️ Исправить")) == ""
    rows = shown(servers, message_id)
    assert rows[0] == ["• ✅ Приветствие", "◐", "❌"] and rows[1] == ["✅ Выявление потребн…", "◐", "• ❌"]
    assert rows[-1] == ["Готово"] and len(servers.telegram.messages) == 1, "the keyboard is edited, no new message"

    answer = tap(rig, servers, message_id, data_of(servers, message_id, "✅ Выявление потребн…"))
    assert answer == "Выявление потребностей: ✅ выполнено"
    text = servers.telegram.texts[(CHAT_ID, message_id)]
    assert "Выявление потребностей" in text and "(исправлено: Анна)" in text
    assert "<b>75</b>/100" in text and "(с исправлениями)" in text, "the score is recomputed with the human verdict"
    assert shown(servers, message_id)[1] == ["• ✅ Выявление потребн…", "◐", "❌"]
    call = Call.get()
    assert CallAnalysis.model_validate_json(call.analysis_json).rubric[1].verdict == "missed", "the model's stays"
    item = BiRubricItem.get(BiRubricItem.item_id == "needs")
    assert (item.verdict, item.human_verdict, item.corrected_by) == ("missed", "done", "Анна")
    fact = BiCall.get()
    assert (fact.score, fact.score_corrected) == (50, 75)
    run_once(rig.app, at(20))
    run_once(rig.app, at(30))
    assert patches(servers) == 2 and servers.amo.lead_field(LEAD, SCORE) == 75

    edits = len(servers.telegram.edits)
    assert tap(rig, servers, message_id, data_of(servers, message_id, "• ✅ Выявление потребн…")) == "Уже исправлено"
    assert len(servers.telegram.edits) == edits, "a double tap changes nothing"
    assert VerdictCorrection.select().count() == 1
    run_once(rig.app, at(40))
    assert patches(servers) == 2, "the amoCRM field is written again only when the score changed"

    assert tap(rig, servers, message_id, data_of(servers, message_id, "Готово")) == ""
    assert shown(servers, message_id) == [["▶️ Приветствие 00:04", "▶️ Выявление потребн… 02:30"], ["✏️ Исправить"]]


def test_an_analysis_rewritten_later_keeps_the_corrections_in_the_bi_tables(rig: Rig, servers: Servers) -> None:
    message_id = card(servers)["message_id"]
    tap(rig, servers, message_id, data_of(servers, message_id, "✏️ Исправить"))
    tap(rig, servers, message_id, data_of(servers, message_id, "✅ Выявление потребн…"))
    call = Call.get()
    rig.app.store.update(call, 1, analysis_json=call.analysis_json)  # rewritten: the BI rows are made again
    assert BiRubricItem.get(BiRubricItem.item_id == "needs").human_verdict == "done"
    assert BiCall.get().score_corrected == 75


def test_a_stranger_and_a_forged_button_change_nothing(
    rig: Rig, servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    message_id = card(servers)["message_id"]
    edit = data_of(servers, message_id, "✏️ Исправить")
    caplog.set_level(logging.INFO, "salesbot_poller")
    assert tap(rig, servers, message_id, edit, user=STRANGER) == "Только для руководителей"
    forged = edit.rsplit(":", 1)[0] + ":AAAAAAAAAAAAAAAAAAAAAA"
    assert tap(rig, servers, message_id, forged) == "Кнопка недействительна"
    other_install = buttons.data(b"another install's key", "s", Call.get().id, "1d")
    assert tap(rig, servers, message_id, other_install) == "Кнопка недействительна"
    assert tap(rig, servers, message_id, "garbage") == "Кнопка недействительна"
    assert servers.telegram.edits == [] and VerdictCorrection.select().count() == 0
    assert len(servers.telegram.messages) == 1
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 4, refused


def test_the_calls_manager_may_press_with_managers_may_correct(rig: Rig, servers: Servers) -> None:
    message_id = card(servers)["message_id"]
    assert tap(rig, servers, message_id, data_of(servers, message_id, "✏️ Исправить"), user=MANAGER) == ""
    assert shown(servers, message_id)[-1] == ["Готово"]


def test_a_press_met_again_after_a_restart_is_not_handled_twice(rig: Rig, servers: Servers) -> None:
    message_id = card(servers)["message_id"]
    data = data_of(servers, message_id, "✏️ Исправить")
    tap(rig, servers, message_id, data)
    tap(rig, servers, message_id, data_of(servers, message_id, "❌"))  # the first row's: Приветствие
    answered, edits = len(servers.telegram.answers), len(servers.telegram.edits)
    # The process restarts and Telegram delivers the same press again (its answer was lost).
    rig.app.store = Store.open(rig.app.config.storage.database, int(time.time()))
    query = servers.telegram.answers[-1]["callback_query_id"]
    again = {"id": query, "from": {"id": BOSS, "is_bot": False, "first_name": "Анна"}, "chat_instance": "1",
             "message": {"message_id": message_id, "date": int(time.time()), "chat": {"id": int(CHAT_ID),
             "type": "supergroup"}}, "data": data_of(servers, message_id, "◐")}  # fmt: skip
    servers.telegram.push_update({"callback_query": again})
    while updates := bot.fetch(rig.app, 0):
        for update in updates:
            bot.take(rig.app, update, int(time.time()), bot.CommandLimits())
    assert (len(servers.telegram.answers), len(servers.telegram.edits)) == (answered, edits)
    assert [v.verdict for v in VerdictCorrection.select()] == ["missed"]


def test_an_old_card_gets_the_corrected_card_as_a_fresh_reply(rig: Rig, servers: Servers) -> None:
    message_id = card(servers)["message_id"]
    old = int(time.time()) - 49 * 3600
    tap(rig, servers, message_id, data_of(servers, message_id, "✏️ Исправить"), date=old)
    assert servers.telegram.edits == []
    fresh = servers.telegram.messages[-1]
    assert (
        fresh["message_id"] != message_id
        and json.loads(json.dumps(fresh["reply_parameters"]))["message_id"] == message_id
    )
    assert [b["text"] for b in fresh["reply_markup"][-1]] == ["Готово"]
    # The fresh copy is editable: a verdict set on it edits it in place.
    answer = tap(rig, servers, fresh["message_id"], data_of(servers, fresh["message_id"], "◐"))
    assert (
        answer.startswith("Приветствие")
        and "(исправлено: Анна)" in servers.telegram.texts[(CHAT_ID, fresh["message_id"])]
    )


def test_a_card_telegram_will_not_edit_gets_a_fresh_reply(rig: Rig, servers: Servers) -> None:
    message_id = card(servers)["message_id"]
    servers.telegram.uneditable.add(message_id)
    assert tap(rig, servers, message_id, data_of(servers, message_id, "✏️ Исправить")) == ""
    assert servers.telegram.messages[-1]["reply_parameters"]["message_id"] == message_id


def test_a_button_of_a_call_that_is_gone_says_so(rig: Rig, servers: Servers) -> None:
    message_id = card(servers)["message_id"]
    gone = buttons.data(rig.app.store.callback_secret(), "e", 999_999)
    assert tap(rig, servers, message_id, gone) == "Звонок не найден: он удалён или ещё не разобран"
    stale = buttons.data(rig.app.store.callback_secret(), "s", Call.get().id, "40d")
    assert tap(rig, servers, message_id, stale).startswith("Кнопка устарела")
    assert servers.telegram.edits == []


def test_call_command_shows_the_same_buttons(rig: Rig, servers: Servers) -> None:
    buttons_of_card = shown(servers, card(servers)["message_id"])
    servers.telegram.MAX_LONG_POLL = 0.0
    servers.telegram.push_message(CHAT_ID, BOSS, f"/call {Call.get().id}")
    for update in bot.fetch(rig.app, 0):
        bot.take(rig.app, update, int(time.time()), bot.CommandLimits())
    answer = servers.telegram.messages[-1]
    assert [[b["text"] for b in row] for row in answer["reply_markup"]] == buttons_of_card


def test_an_unreadable_press_is_skipped_and_the_next_one_answered(
    rig: Rig, servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    message_id = card(servers)["message_id"]
    broken = servers.telegram.push_update({"callback_query": {"id": "q-broken", "from": {"id": BOSS}, "data": "x"}})
    caplog.set_level(logging.WARNING, "salesbot_poller")
    assert tap(rig, servers, message_id, data_of(servers, message_id, "✏️ Исправить")) == ""
    assert [a["callback_query_id"] for a in servers.telegram.answers] != ["q-broken"]
    assert len(servers.telegram.answers) == 1 and servers.telegram.update_offsets[-1] == broken + 2
    assert any(f"update {broken} skipped" in r.getMessage() for r in caplog.records)


def test_reports_show_the_corrected_score(rig: Rig, servers: Servers) -> None:
    message_id = card(servers)["message_id"]
    tap(rig, servers, message_id, data_of(servers, message_id, "✏️ Исправить"))
    tap(rig, servers, message_id, data_of(servers, message_id, "✅ Выявление потребн…"))
    texts = []
    for command in ("/worst", "/stats"):
        servers.telegram.push_message(CHAT_ID, BOSS, command)
        for update in bot.fetch(rig.app, 0):
            bot.take(rig.app, update, int(at(60).timestamp()), bot.CommandLimits())
        texts.append(servers.telegram.messages[-1]["text"])
    assert texts[0].splitlines()[2].startswith("75/100"), texts[0]
    assert "средняя 75" in texts[1], texts[1]


def test_telegram_down_while_correcting_keeps_the_correction_and_says_so(rig: Rig, servers: Servers) -> None:
    message_id = card(servers)["message_id"]
    tap(rig, servers, message_id, data_of(servers, message_id, "✏️ Исправить"))
    servers.telegram.down_chats.add(CHAT_ID)  # editMessageText answers 502
    answer = tap(rig, servers, message_id, data_of(servers, message_id, "✅ Выявление потребн…"))
    assert answer.startswith("Выявление потребностей: ✅ выполнено (сохранено; карточку обновить не удалось")
    assert [v.verdict for v in VerdictCorrection.select()] == ["done"]
    assert tap(rig, servers, message_id, data_of(servers, message_id, "Готово")) == bot_callbacks.FAILED
