"""The daily digest: per manager figures for the last 24 h, sent once a day at
`telegram.digest_time` in the account's zone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from salesbot_poller.lanes import run_once
from salesbot_poller.reports.digest import due_day
from tests.conftest import CHAT_ID, Servers
from tests.fakes import validate_telegram_html
from tests.loopback_app import IVAN, MARIA, add_call, at, loopback_rig


def digests(servers: Servers) -> list[dict]:
    return [m for m in servers.telegram.messages if "Сводка за сутки" in m["visible_text"]]


def test_due_once_the_local_digest_time_has_passed() -> None:
    moscow = ZoneInfo("Europe/Moscow")
    before = int(datetime(2026, 11, 25, 5, 59, tzinfo=UTC).timestamp())  # 08:59 in Moscow
    after = int(datetime(2026, 11, 25, 6, 0, tzinfo=UTC).timestamp())
    assert due_day("09:00", before, moscow) is None
    day, moment = due_day("09:00", after, moscow) or (None, 0)
    assert str(day) == "2026-11-25" and moment == after


def test_one_digest_a_day_with_each_managers_figures(servers: Servers) -> None:
    # Unpaced: its messages to one chat would wait a second each (9 s); pacing is not tested here.
    rig = loopback_rig(servers, paced=False, telegram={"digest_time": "18:00"})
    analyzer = rig.analyzer
    analyzer.score = 40
    add_call(rig, 1, minutes=-30, duration=125, user=IVAN)
    add_call(rig, 2, minutes=-20, duration=0, status=6, user=IVAN, phone="+79990000002")  # missed, returned
    add_call(rig, 3, minutes=-10, duration=0, status=6, user=MARIA, phone="+79990000003")  # missed, not returned
    run_once(rig.app, at(0))
    analyzer.score = 90
    add_call(rig, 4, minutes=5, duration=65, user=IVAN)
    add_call(rig, 5, minutes=6, direction="out", duration=30, user=MARIA, phone="89990000002")  # the callback
    run_once(rig.app, at(8))
    run_once(rig.app, at(8 * 60 + 59))  # 17:59: not yet
    assert digests(servers) == []

    run_once(rig.app, at(9 * 60))  # 18:00
    run_once(rig.app, at(9 * 60 + 1))
    (digest,) = digests(servers)
    assert digest["chat_id"] == CHAT_ID
    validate_telegram_html(digest["text"])
    text = digest["visible_text"]
    assert "24.11 18:00 – 25.11 18:00" in text
    ivan, maria = text.split("👤 ")[1:]
    assert ivan.startswith("Иван Петров")
    assert "📞 звонков 2 · 🕒 разговор 3:10 · ⭐ средняя 65\n🔴 пропущено 1, перезвонили 1" in ivan
    assert "Слабый звонок: ООО Ромашка-1 — 40/100" in ivan
    assert '<a href="https://acme.amocrm.ru/leads/detail/7001">ООО Ромашка-1</a>' in digest["text"]
    assert maria.startswith("Мария Сидорова")
    assert "📞 звонков 1 · 🕒 разговор 0:30 · ⭐ средняя 90\n🔴 пропущено 1, перезвонили 0" in maria

    run_once(rig.app, at(24 * 60 + 9 * 60))  # the next day at 18:00: the next digest
    assert len(digests(servers)) == 2


def test_no_digest_unless_a_time_is_set(servers: Servers) -> None:
    rig = loopback_rig(servers)
    run_once(rig.app, at(23 * 60))
    assert digests(servers) == []


def test_a_day_without_calls_says_so(servers: Servers) -> None:
    rig = loopback_rig(servers, telegram={"digest_time": "09:00"})
    run_once(rig.app, at(0))
    (digest,) = digests(servers)
    assert "Звонков не было." in digest["visible_text"]
