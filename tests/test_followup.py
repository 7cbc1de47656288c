"""Missed calls: the alert at once, one escalation after `poller.missed_call_sla_minutes`
without a callback, and a reply to the alert once someone called the number back. Real
Telegram client against the fake Bot API; time is passed in."""

from __future__ import annotations

from typing import Any

from salesbot_poller.lanes import run_once
from salesbot_poller.pipeline import followup
from tests.builder import already_running
from tests.conftest import CHAT_ID, Servers
from tests.fakes import validate_telegram_html
from tests.loopback_app import MARIA, add_call, at, calls, loopback_rig

ALERT_CHAT = "-1009999"


def texts(servers: Servers) -> list[str]:
    return [m["visible_text"] for m in servers.telegram.messages]


def test_alert_then_one_escalation_then_a_reply_when_called_back(servers: Servers) -> None:
    # Unpaced: its messages to one chat would wait a second each (3 s); pacing is not tested here.
    rig = loopback_rig(servers, paced=False, poller={"missed_call_sla_minutes": 15})
    add_call(rig, 1, minutes=-2, duration=0, status=6, phone="+7 (999) 123-45-67")
    run_once(rig.app, at(0))
    (alert,) = servers.telegram.messages
    assert "Пропущенный звонок" in alert["visible_text"]
    run_once(rig.app, at(12))  # within the SLA (missed at -2, due at 13)
    assert len(servers.telegram.messages) == 1
    run_once(rig.app, at(14))
    run_once(rig.app, at(15))
    escalation = servers.telegram.messages[1]
    assert len(servers.telegram.messages) == 2 and "Не перезвонили за 15 мин" in escalation["visible_text"]
    assert escalation["chat_id"] == CHAT_ID and escalation["reply_parameters"]["message_id"] == alert["message_id"]

    add_call(rig, 2, minutes=20, direction="out", duration=0, status=6, phone="89991234567")  # not reached
    run_once(rig.app, at(21))
    assert len(servers.telegram.messages) == 2, "an unanswered attempt is not a callback"
    add_call(rig, 3, minutes=22, direction="out", duration=95, user=MARIA, phone="89991234567")
    run_once(rig.app, at(23))
    replies = [m for m in servers.telegram.messages if "Перезвонили" in m["visible_text"]]
    assert len(replies) == 1
    assert replies[0]["reply_parameters"] == {"message_id": alert["message_id"], "allow_sending_without_reply": True}
    assert "Мария Сидорова" in replies[0]["visible_text"] and "через 24 мин" in replies[0]["visible_text"]
    missed, _, callback = calls()
    assert missed.callback_call_id == callback.id
    count = len(servers.telegram.messages)
    run_once(rig.app, at(30))
    assert len(servers.telegram.messages) == count, "each said once"
    for message in servers.telegram.messages:
        validate_telegram_html(message["text"])


def test_a_callback_within_the_sla_means_no_escalation(servers: Servers) -> None:
    rig = loopback_rig(servers, paced=False)
    add_call(rig, 1, minutes=-2, duration=0, status=7)
    run_once(rig.app, at(0))
    add_call(rig, 2, minutes=3, direction="out", duration=40)
    run_once(rig.app, at(4))
    run_once(rig.app, at(60))
    assert not any("Не перезвонили" in t for t in texts(servers))
    assert sum("Перезвонили" in t for t in texts(servers)) == 1


def test_the_escalation_goes_to_the_alert_chat_when_there_is_one(servers: Servers) -> None:
    servers.telegram.known_chats |= {ALERT_CHAT}
    rig = loopback_rig(servers, paced=False, telegram={"alert_chat_id": ALERT_CHAT})
    already_running(rig.app)  # rang while running: its SLA counts from its ring
    add_call(rig, 1, minutes=-20, duration=0, status=6)
    run_once(rig.app, at(0))
    alert, escalation = servers.telegram.messages
    assert alert["chat_id"] == CHAT_ID and escalation["chat_id"] == ALERT_CHAT
    assert escalation["reply_parameters"] is None


def test_an_escalation_that_failed_is_sent_once_later(servers: Servers) -> None:
    rig = loopback_rig(servers, paced=False)
    add_call(rig, 1, minutes=-2, duration=0, status=6)
    run_once(rig.app, at(0))
    servers.telegram.down_chats = {CHAT_ID}
    run_once(rig.app, at(20))
    servers.telegram.down_chats = set()
    run_once(rig.app, at(21))
    run_once(rig.app, at(22))
    assert sum("Не перезвонили" in t for t in texts(servers)) == 1


def test_an_escalation_stored_is_not_rendered_again_each_pass(servers: Servers, monkeypatch: Any) -> None:
    rig = loopback_rig(servers, paced=False, poller={"missed_call_sla_minutes": 15})
    add_call(rig, 1, minutes=-2, duration=0, status=6, phone="+7 (999) 123-45-67")
    run_once(rig.app, at(0))
    rendered: list[int] = []
    render = followup.render_escalation
    monkeypatch.setattr(followup, "render_escalation", lambda *a, **k: rendered.append(1) or render(*a, **k))
    run_once(rig.app, at(14))
    run_once(rig.app, at(15))
    assert len(rendered) == 1 and len(servers.telegram.messages) == 2
    for minute in (16, 17, 18):  # the missed call stays unreturned in the window: checked by key only
        run_once(rig.app, at(minute))
    assert len(rendered) == 1 and len(servers.telegram.messages) == 2
