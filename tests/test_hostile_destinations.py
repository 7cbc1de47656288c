"""Destinations are independent: a failing amoCRM write-back or alert chat never
holds back the cards and missed-call alerts, never marks a delivered call failed, and is
retried on its own. Through the real command line against the loopback servers."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from salesbot_poller.cli import commands
from salesbot_poller.lanes import run_once
from tests.builder import database_already_running
from tests.conftest import CHAT_ID, Servers, assert_no_secret, run_cli
from tests.fakes import make_mp3
from tests.loopback_app import add_call, at, calls, loopback_rig, ts

ALERT_CHAT = "-1009999"


def _config(servers: Servers, **poller: object) -> Path:
    text = servers.config_text(retry_delay_seconds=1, **poller)
    text = text.replace("[telegram]\n", f'[telegram]\nalert_chat_id = "{ALERT_CHAT}"\nalert_below_score = 100\n')
    text = text.replace("[amocrm]\n", "[amocrm]\nwrite_back = true\n")
    path = servers.tmp / "config.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def _calls(servers: Servers, answered: int, missed: int) -> None:
    now = int(time.time())
    for n in range(1, answered + missed + 1):
        is_missed = n > answered
        servers.amo.add_call(
            entity_id=7000 + n,
            note_id=n,
            duration=0 if is_missed else 60,
            phone=f"+7999000{n:04d}",
            link=None if is_missed else servers.recordings.add(f"/r/{n}.mp3", make_mp3(1.0)),
            call_status=6 if is_missed else 4,
            created_at=now - 60 + n,
        )


def _rows(servers: Servers, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(servers.tmp / "state" / "salesbot.db") as db:
        return list(db.execute(sql))


def _chats(servers: Servers) -> list[str]:
    return [str(m["chat_id"]) for m in servers.telegram.messages]


@pytest.mark.slow
def test_a_failing_crm_and_alert_chat_hold_back_nothing_and_are_retried_alone(servers: Servers) -> None:
    servers.telegram.known_chats |= {ALERT_CHAT}
    servers.telegram.down_chats = {ALERT_CHAT}
    servers.amo.fail_next(r"/notes$", 502, "<html>Bad Gateway</html>", times=1000, method="POST")
    _calls(servers, answered=3, missed=2)
    config = _config(servers)
    database_already_running(servers.database, int(time.time()) - 7200)  # a running daemon: alerts one by one

    first = run_cli("once", config=config, timeout=120)
    assert first.returncode == 0, first.stderr
    assert _chats(servers).count(CHAT_ID) == 5, "3 cards and 2 missed-call alerts, none held back"
    stages = sorted(str(stage) for (stage,) in _rows(servers, "select stage from call"))
    assert stages == ["missed_alerted"] * 2 + ["notified"] * 3
    waiting = _rows(servers, "select kind, attempts from delivery where done_at is null order by id")
    assert sorted(kind for kind, _ in waiting) == ["amo_note"] * 3 + ["card_alert"] * 3
    assert all(attempts == 1 for _, attempts in waiting)
    status = run_cli("status", config=config).stdout
    assert "destinations failing: 6 message(s)/write(s) wait for another try, 0 given up" in status, status

    servers.telegram.down_chats = set()  # both come back
    servers.amo.clear_faults()
    time.sleep(1.5)  # the first backoff (retry_delay_seconds = 1)
    second = run_cli("once", config=config, timeout=120)
    assert second.returncode == 0, second.stderr
    assert _chats(servers).count(CHAT_ID) == 5, "nothing sent twice"
    assert _chats(servers).count(ALERT_CHAT) == 3 and len(servers.amo.created_notes) == 3
    assert _rows(servers, "select count(*) from delivery where done_at is null") == [(0,)]
    assert "destinations failing" not in run_cli("status", config=config).stdout
    assert_no_secret(first.stdout, first.stderr, second.stdout, second.stderr)


@pytest.mark.slow
def test_a_destination_that_stays_down_is_given_up_and_the_calls_stay_delivered(servers: Servers) -> None:
    servers.telegram.known_chats |= {ALERT_CHAT}
    servers.telegram.down_chats = {ALERT_CHAT}
    servers.amo.fail_next(r"/notes$", 502, "<html>Bad Gateway</html>", times=1000, method="POST")
    _calls(servers, answered=2, missed=1)
    config = _config(servers, max_attempts=2)
    logs = ""
    # A destination that fails is tried once a pass (its later rows wait, to keep their
    # order): each row gets its attempts within a few passes.
    for _ in range(6):
        result = run_cli("once", config=config, timeout=120)
        assert result.returncode == 0, result.stderr
        logs += result.stderr
        if _rows(servers, "select count(*) from delivery where done_at is null") == [(0,)]:
            break
        time.sleep(1.5)
    assert "given up after 2 attempt(s)" in logs
    stages = sorted(str(stage) for (stage,) in _rows(servers, "select stage from call"))
    assert stages == ["missed_alerted", "notified", "notified"], "a delivered call is never failed"
    assert _chats(servers) == [CHAT_ID] * 3
    status = run_cli("status", config=config).stdout
    assert "destinations failing: 0 message(s)/write(s) wait for another try, 4 given up" in status, status
    assert "failed calls: 0" in status


@pytest.mark.slow
def test_a_card_refused_for_good_fails_the_call_and_retry_renders_it_again(servers: Servers) -> None:
    rig = loopback_rig(servers, amocrm={"write_back": True})
    refusal = {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}
    servers.telegram.fail_next("sendMessage", 400, refusal)
    add_call(rig, 1)
    run_once(rig.app, at(0))
    (call,) = calls()
    assert call.stage == "failed" and "its card was refused" in (call.last_error or ""), call.last_error
    assert servers.telegram.messages == [] and servers.amo.created_notes == [], "nothing else goes for it"

    out: list[str] = []
    assert commands.retry(rig.app.store, [call.id], False, ts(1), out.append)
    assert out == [f"call {call.id} (leads/{call.entity_id}): requeued at analysed"], "rendered anew"
    run_once(rig.app, at(2))
    assert calls()[0].stage == "notified"
    assert len(servers.telegram.messages) == 1 and len(servers.amo.created_notes) == 1
