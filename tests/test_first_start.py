"""The first start is quiet: the missed calls the first look-back of a fresh database finds are
alerted in ONE summary, and their callback SLA counts from the start. Through the command line
(`once`) against the fake amoCRM and Bot API, and through `run_once` with the real Telegram
client; time is passed in (the command's clock is set, never slept for)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from salesbot_poller.lanes import run_once
from tests.conftest import CHAT_ID, Servers, run_cli
from tests.fakes import validate_telegram_html
from tests.loopback_app import MARIA, add_call, at, loopback_rig

SLA = 15
NUMBERS = ("+79161112267", "+79163334468", "+79165556669")


def texts(servers: Servers) -> list[str]:
    return [m["visible_text"] for m in servers.telegram.messages]


def once_at(monkeypatch: pytest.MonkeyPatch, servers: Servers, moment: int) -> None:
    """`salesbot-poller once` with its clock at `moment`."""
    monkeypatch.setattr("salesbot_poller.cli.daemon.utc_now", lambda: datetime.fromtimestamp(moment, UTC))
    result = run_cli("once", config=servers.write_config(missed_call_sla_minutes=SLA))
    assert result.returncode == 0, result.stderr


def missed(servers: Servers, start: int) -> None:
    """Three missed calls 50, 40 and 30 minutes before `start`, inside the hour's look-back."""
    for n, (minutes, phone) in enumerate(zip((50, 40, 30), NUMBERS, strict=True), 1):
        servers.amo.add_call(
            entity_id=7000 + n, note_id=n, duration=0, call_status=6, phone=phone, link=None,
            created_at=start - minutes * 60,
        )  # fmt: skip


def test_the_first_once_says_the_look_back_s_missed_calls_in_one_message(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = int(datetime.now(UTC).timestamp())
    missed(servers, start)
    once_at(monkeypatch, servers, start)
    (summary,) = texts(servers)
    assert summary.startswith("📵 3 пропущенных за последний час, не перезвонили:"), summary
    assert all(shown in summary for shown in ("+7 916 111-22-67", "+7 916 333-44-68", "+7 916 555-66-69")), summary
    validate_telegram_html(servers.telegram.messages[0]["text"])


def test_no_escalation_seconds_after_the_first_start_but_one_sla_after_it(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = int(datetime.now(UTC).timestamp())
    missed(servers, start)
    once_at(monkeypatch, servers, start)
    assert len(texts(servers)) == 1
    # 10 min after the start: 40-60 min after the calls, well past their SLA, not past the start's.
    once_at(monkeypatch, servers, start + 10 * 60)
    assert len(texts(servers)) == 1, texts(servers)
    once_at(monkeypatch, servers, start + (SLA + 1) * 60)
    escalations = [m for m in servers.telegram.messages if f"Не перезвонили за {SLA} мин" in m["visible_text"]]
    assert len(escalations) == 3, texts(servers)
    summary_id = servers.telegram.messages[0]["message_id"]
    assert all(m["reply_parameters"]["message_id"] == summary_id for m in escalations), "they answer the summary"
    once_at(monkeypatch, servers, start + (SLA + 5) * 60)
    assert len(texts(servers)) == 4, "each said once"


def test_the_summary_masks_numbers_as_alerts_do(servers: Servers) -> None:
    rig = loopback_rig(servers, paced=False, telegram={"mask_phones": "all"})
    add_call(rig, 1, minutes=-50, duration=0, status=6, phone="+7 916 111-22-67")
    add_call(rig, 2, minutes=-40, duration=0, status=6, phone="+7 916 333-44-68")
    run_once(rig.app, at(0))
    (summary,) = texts(servers)
    assert "+7 916 ***-**-67" in summary and "111-22" not in summary, summary


def test_a_single_look_back_call_keeps_its_own_alert_and_the_sla_from_the_start(servers: Servers) -> None:
    rig = loopback_rig(servers, paced=False, poller={"missed_call_sla_minutes": SLA})
    add_call(rig, 1, minutes=-50, duration=0, status=6, phone="+7 916 111-22-67")
    run_once(rig.app, at(0))
    (alert,) = texts(servers)
    assert "Пропущенный звонок" in alert, alert
    run_once(rig.app, at(SLA - 1))
    assert len(texts(servers)) == 1, texts(servers)
    run_once(rig.app, at(SLA + 1))
    assert len([text for text in texts(servers) if "Не перезвонили" in text]) == 1, texts(servers)


def test_calls_after_the_first_start_are_alerted_one_by_one_and_a_callback_answers_the_summary(
    servers: Servers,
) -> None:
    rig = loopback_rig(servers, paced=False, poller={"missed_call_sla_minutes": SLA})
    add_call(rig, 1, minutes=-50, duration=0, status=6, phone="+7 916 111-22-67")
    add_call(rig, 2, minutes=-40, duration=0, status=6, phone="+7 916 333-44-68")
    add_call(rig, 3, minutes=-30, duration=0, status=6, phone="+7 916 555-66-69")
    run_once(rig.app, at(0))
    assert len(texts(servers)) == 1
    add_call(rig, 4, minutes=14, duration=0, status=6, phone="+7 916 777-88-70")  # after the start: its own alert
    add_call(rig, 5, minutes=14.5, direction="out", duration=60, user=MARIA, phone="+7 916 111-22-67")  # a callback
    run_once(rig.app, at(14.9))
    later = texts(servers)[1:]
    assert any("Пропущенный звонок" in text and "777-88-70" in text for text in later), later
    assert any("Перезвонили" in text and "Мария Сидорова" in text for text in later), later
    assert not any("Не перезвонили" in text for text in later), later
    (reply,) = [m for m in servers.telegram.messages if "Перезвонили" in m["visible_text"]]
    assert reply["reply_parameters"]["message_id"] == servers.telegram.messages[0]["message_id"], "answers the summary"
    run_once(rig.app, at(SLA + 1))  # the SLA from the start: one escalation each for the two not called back
    assert len([text for text in texts(servers) if f"Не перезвонили за {SLA} мин" in text]) == 2, texts(servers)


def test_a_summary_not_sent_at_the_first_start_is_sent_by_the_next_pass_once(servers: Servers) -> None:
    rig = loopback_rig(servers, paced=False)
    add_call(rig, 1, minutes=-50, duration=0, status=6, phone="+7 916 111-22-67")
    add_call(rig, 2, minutes=-40, duration=0, status=6, phone="+7 916 333-44-68")
    servers.telegram.down_chats.add(CHAT_ID)  # an outage at the first start
    run_once(rig.app, at(0))
    assert texts(servers) == []
    servers.telegram.down_chats.clear()
    run_once(rig.app, at(1))
    run_once(rig.app, at(2))
    (summary,) = texts(servers)
    assert summary.startswith("📵 2 пропущенных"), summary


def test_a_database_that_has_polled_before_alerts_one_by_one(servers: Servers) -> None:
    rig = loopback_rig(servers, paced=False)
    run_once(rig.app, at(0))  # the first start: nothing missed
    add_call(rig, 1, minutes=1, duration=0, status=6, phone="+7 916 111-22-67")
    add_call(rig, 2, minutes=2, duration=0, status=6, phone="+7 916 333-44-68")
    run_once(rig.app, at(3))
    assert ["Пропущенный звонок" in text for text in texts(servers)] == [True, True], texts(servers)
