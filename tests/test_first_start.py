"""The first start is quiet: the missed calls the first look-back of a fresh database finds are
alerted in ONE summary, and their callback SLA counts from the start. Real Telegram client
against the fake Bot API; time is passed in."""

from __future__ import annotations

from salesbot_poller.lanes import run_once
from tests.conftest import Servers
from tests.fakes import validate_telegram_html
from tests.loopback_app import MARIA, add_call, at, loopback_rig


def texts(servers: Servers) -> list[str]:
    return [m["visible_text"] for m in servers.telegram.messages]


def test_the_look_back_s_missed_calls_are_one_summary_and_their_sla_starts_at_the_start(servers: Servers) -> None:
    rig = loopback_rig(servers, paced=False, poller={"missed_call_sla_minutes": 15})
    add_call(rig, 1, minutes=-50, duration=0, status=6, phone="+7 916 111-22-67")
    add_call(rig, 2, minutes=-40, duration=0, status=6, phone="+7 916 333-44-68")
    add_call(rig, 3, minutes=-30, duration=0, status=6, phone="+7 916 555-66-69")
    run_once(rig.app, at(0))  # a fresh database: the first poll looks back an hour
    (summary,) = texts(servers)
    assert summary.startswith("📵 3 пропущенных за последний час, не перезвонили: ")
    assert "+7 916 111-22-67" in summary and "+7 916 555-66-69" in summary
    validate_telegram_html(servers.telegram.messages[0]["text"])

    run_once(rig.app, at(1))
    run_once(rig.app, at(14))  # the calls rang 30-50 min ago, but the SLA counts from the start
    assert len(texts(servers)) == 1, texts(servers)

    add_call(rig, 4, minutes=14, duration=0, status=6, phone="+7 916 777-88-70")  # after the start: its own alert
    add_call(rig, 5, minutes=14.5, direction="out", duration=60, user=MARIA, phone="+7 916 111-22-67")  # a callback
    run_once(rig.app, at(14.9))
    later = texts(servers)[1:]
    assert any("Пропущенный звонок" in text and "777-88-70" in text for text in later), later
    assert any("Перезвонили" in text and "Мария Сидорова" in text for text in later), later
    assert not any("Не перезвонили" in text for text in later), later
    (reply,) = [m for m in servers.telegram.messages if "Перезвонили" in m["visible_text"]]
    assert reply["reply_parameters"]["message_id"] == servers.telegram.messages[0]["message_id"], "answers the summary"

    run_once(rig.app, at(16))  # the SLA from the start has passed: one escalation each for the other two
    escalations = [text for text in texts(servers) if "Не перезвонили за 15 мин" in text]
    assert len(escalations) == 2, texts(servers)
    run_once(rig.app, at(20))
    assert len([text for text in texts(servers) if "Не перезвонили" in text]) == 2, "each said once"


def test_a_database_that_has_polled_before_alerts_one_by_one(servers: Servers) -> None:
    rig = loopback_rig(servers, paced=False)
    run_once(rig.app, at(0))  # the first start: nothing missed
    add_call(rig, 1, minutes=1, duration=0, status=6, phone="+7 916 111-22-67")
    add_call(rig, 2, minutes=2, duration=0, status=6, phone="+7 916 333-44-68")
    run_once(rig.app, at(3))
    assert [text.startswith("Пропущенный звонок") or "Пропущенный звонок" in text for text in texts(servers)] == [
        True,
        True,
    ], texts(servers)
