"""Personal data goes after `storage.retention_days` (once a day, in batches), and
on request for one number (`salesbot-poller forget --phone`), while reports stay right and
nothing is ever sent twice."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from salesbot_poller.cli import commands
from salesbot_poller.domain import CallAnalysis, Stage
from salesbot_poller.lanes import run_once
from salesbot_poller.pipeline import retention
from salesbot_poller.reports import digest
from salesbot_poller.store import Call, Store
from tests.builder import Rig, already_running, build_rig, database_already_running
from tests.conftest import CHAT_ID, Servers, assert_no_secret, run_cli
from tests.loopback_app import add_call, at, ts
from tests.test_end_to_end import seed

DAY_MINUTES = 24 * 60
OLD = -40 * DAY_MINUTES  # 40 days before T0: past a 30-day retention


# --- retention (unit level: the store and `retention.run` with a fixed clock) ------------


def seeded(tmp_path: Path, **storage: object) -> Rig:
    """Two old calls (an answered one with a transcript document, a missed one), processed
    40 days ago; then two recent ones, processed at T0 - 5 min. Nothing is cleared yet."""
    rig = build_rig(tmp_path, storage={"retention_days": 30, **storage}, telegram={"attach_transcript": True})
    already_running(rig.app, at(OLD - 60))  # the old missed call is alerted and escalated as it rings
    add_call(rig, 1, minutes=OLD - 30, duration=125, phone="+7 (999) 111-00-01")
    add_call(rig, 2, minutes=OLD - 20, duration=0, status=6, phone="+79991110002")
    run_once(rig.app, at(OLD))
    add_call(rig, 3, minutes=-30, duration=65, phone="+79991110003")
    add_call(rig, 4, minutes=-20, duration=0, status=6, phone="+79991110004")
    rig.app.store.set_state(retention.STATE_KEY, json.dumps({"day": "2026-11-25"}))  # not today's run yet
    run_once(rig.app, at(-5))
    rig.app.store.set_state(retention.STATE_KEY, "")
    return rig


def by_entity(entity_id: int) -> Call:
    return Call.get(Call.entity_id == entity_id)


def test_old_calls_lose_their_personal_data_and_keep_what_reports_need(tmp_path: Path) -> None:
    rig = seeded(tmp_path)
    store = rig.app.store
    old, missed = by_entity(7001), by_entity(7002)
    usage_before = store.usage_since(0)
    window = (ts(OLD - 60), ts(OLD))
    digest_before = digest.collect(rig.app, *window)
    sent_before = list(rig.notifier.sent)
    old_ids = {row.id: row.sent_ids_json for row in store.deliveries_of([old.id, missed.id])}
    assert old.transcript and old.phone and old.link and len(old_ids) == 4  # card, transcript, alert, escalation
    audio = Path(rig.app.config.storage.audio_dir)
    stale, fresh = audio / "call-999.mp3", audio / "call-998.mp3"
    stale.write_bytes(b"ID3"), fresh.write_bytes(b"ID3")
    forty_days_ago = ts(OLD)
    os.utime(stale, (forty_days_ago, forty_days_ago))

    done = retention.run(rig.app, ts(0))

    assert done is not None and (done.calls, done.messages, done.audio_files) == (2, 4, 1)
    assert not stale.exists() and fresh.exists()
    old, missed, recent = by_entity(7001), by_entity(7002), by_entity(7003)
    for call in (old, missed):
        assert (call.transcript, call.phone, call.link, call.entity_name, call.audio_path) == (None,) * 5
        assert call.personal_removed_at == ts(0)
    assert (old.duration, old.manager_name, old.entity_type, old.stage) == (125, "Иван Петров", "leads", "notified")
    assert missed.stage == Stage.MISSED_ALERTED.value
    analysis = CallAnalysis.model_validate(json.loads(old.analysis_json))
    assert analysis.score == 50 and analysis.rubric[0].verdict == "partly"
    assert analysis.topic == "", "a free topic is the model's words: it goes (a closed-list one stays: test_topics)"
    assert analysis.summary == "" and analysis.objections == [] and analysis.next_step is None
    assert all(item.evidence == "" for item in analysis.rubric)
    for row in store.deliveries_of([old.id, missed.id]):
        assert row.removed_at == ts(0) and row.done_at is not None
        assert row.sent_ids_json == old_ids[row.id], "the sent ids stay: exactly-once still holds"
        assert "Ромашка" not in row.payload_json and "999" not in row.payload_json
    assert recent.transcript and recent.phone == "+79991110003" and recent.personal_removed_at is None
    assert by_entity(7004).phone == "+79991110004"
    # What reports read is unchanged: the digest's figures, usage.
    assert store.usage_since(0) == usage_before
    after = digest.collect(rig.app, *window)
    assert [(d.name, d.calls, d.talk_seconds, d.average, d.missed) for d in after] == [
        (d.name, d.calls, d.talk_seconds, d.average, d.missed) for d in digest_before
    ]
    assert after[0].weakest_call is not None and after[0].weakest_call[1] == "#7001"  # the name is gone, the id stays
    run_once(rig.app, at(1))
    assert rig.notifier.sent == sent_before, "nothing cleared is sent again"


def test_it_runs_once_a_day_across_restarts_and_status_says_what_it_removed(tmp_path: Path) -> None:
    rig = seeded(tmp_path)
    store = rig.app.store
    assert retention.run(rig.app, ts(0)) is not None
    store.close()
    reopened = Store.open(rig.app.config.storage.database, ts(60))  # a restart, later that day
    rig.app.store = reopened
    assert retention.run(rig.app, ts(60)) is None
    lines: list[str] = []
    config = rig.app.config
    moscow = config.model_copy(update={"amocrm": config.amocrm.model_copy(update={"timezone": "Europe/Moscow"})})
    commands.status(reopened, lines.append, moscow, now=ts(60))
    text = "\n".join(lines)
    assert (  # in amocrm.timezone, named
        "retention: last ran 2026-11-25 12:00 Europe/Moscow (storage.retention_days = 30): 2 call(s) cleared, "
        "4 message(s) blanked, 0 audio file(s) deleted (calls before 2026-10-26 12:00 Europe/Moscow)"
    ) in text
    assert "  calls without personal data (retention or forget): 2" in text
    assert "calls: 4" in text and "notified        2" in text and "missed_alerted  2" in text
    next_day = retention.run(rig.app, ts(DAY_MINUTES))
    assert next_day is not None and next_day.calls == 0


def test_a_big_backlog_goes_in_batches_and_zero_keeps_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = seeded(tmp_path, retention_days=0)
    assert retention.run(rig.app, ts(0)) is None
    assert by_entity(7001).transcript
    monkeypatch.setattr(retention, "BATCH", 1)
    batches: list[int] = []
    clear = rig.app.store.clear_personal

    def counted(calls: list[Call], *args: object, **kwargs: object) -> tuple[int, int]:
        batches.append(len(calls))
        return clear(calls, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(rig.app.store, "clear_personal", counted)
    done = retention.clear_before(rig.app, ts(-DAY_MINUTES), ts(0))
    assert done is not None and done.calls == 2 and batches == [1, 1]
    asked: list[bool] = []
    stopped = retention.clear_before(rig.app, ts(0), ts(0), should_stop=lambda: asked.append(True) or len(asked) > 1)
    assert stopped is None and batches == [1, 1, 1]  # one batch, then the stop: the rest waits


def test_a_call_not_delivered_yet_is_skipped_rather_than_sent_without_its_data(tmp_path: Path) -> None:
    rig = build_rig(tmp_path, storage={"retention_days": 30})
    add_call(rig, 1, minutes=OLD - 30, duration=125)
    rig.transcriber.failures = [RuntimeError("boom")]  # quarantined: `retry` could take it back
    run_once(rig.app, at(OLD))
    assert by_entity(7001).stage == Stage.QUARANTINED.value
    retention.run(rig.app, ts(0))
    call = by_entity(7001)
    assert call.stage == Stage.SKIPPED.value and "retention_days" in (call.skip_reason or "")


# --- forget (the real command line against the loopback servers) ----------------------


NUMBER = "+7 (999) 111-00-01"  # the first call's number, written another way


def seed_forget(servers: Servers, now: int) -> None:
    """test_end_to_end's calls, and a second (missed) call from the same number."""
    seed(servers, now)
    servers.amo.add_call(
        entity_type="lead",
        entity_id=7001,
        note_id=106,
        duration=0,
        phone="89991110001",
        link=None,
        call_status=6,
        created_at=now - 200,
        responsible_user_id=555,
    )


def rows(db: Path, query: str) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(query).fetchall()


def config_with(servers: Servers, delete: bool) -> Path:
    path = servers.write_config()
    text = path.read_text().replace(
        "[poller]", f"attach_transcript = true\ndelete_on_forget = {str(delete).lower()}\n[poller]"
    )
    path.write_text(text)
    return path


@pytest.mark.slow
def test_forget_clears_every_call_of_the_number_once_and_keeps_telegram_messages(servers: Servers) -> None:
    seed_forget(servers, int(time.time()))
    config = config_with(servers, delete=False)
    database_already_running(servers.database, int(time.time()) - 7200)  # a running daemon: alerts one by one
    assert run_cli("once", config=config).returncode == 0
    db = servers.tmp / "state" / "salesbot.db"
    assert len(rows(db, "SELECT id FROM call WHERE phone LIKE '%1110001'")) == 2

    unconfirmed = run_cli("forget", "--phone", NUMBER, config=config)  # no terminal, no --yes
    assert unconfirmed.returncode == 1
    assert "not confirmed: no terminal to ask; pass --yes" in unconfirmed.stdout
    assert len(rows(db, "SELECT id FROM call WHERE phone LIKE '%1110001'")) == 2

    first = run_cli("forget", "--phone", NUMBER, "--yes", config=config)
    assert first.returncode == 0, first.stderr
    print(first.stdout)
    assert "forget: ***-**-01: 2 call(s) with this number:" in first.stdout
    assert "forget: ***-**-01: 2 call(s) cleared" in first.stdout
    assert "messages already in Telegram stay (telegram.delete_on_forget = false)" in first.stdout
    logged = [line for line in first.stderr.splitlines() if "forget:" in line]
    assert len(logged) == 1 and "***-**-01: 2 call(s) cleared" in logged[0]
    for text in (first.stdout, first.stderr):
        assert "1110001" not in text and "111-00-01" not in text
    cleared = rows(db, "SELECT transcript, link, phone, entity_name, forgotten_as FROM call WHERE entity_id = 7001")
    assert len(cleared) == 3  # calls 101 and 106, and 103 (the short call: another number, untouched)
    assert sum(1 for row in cleared if row[:4] == (None, None, None, None) and row[4]) == 2
    assert rows(db, "SELECT phone FROM call WHERE note_id = 103") == [("+79991110003",)]
    payloads = rows(
        db,
        "SELECT d.payload_json, d.sent_ids_json FROM delivery d JOIN call c ON c.id = d.call_id "
        "WHERE c.note_id IN (101, 106)",
    )
    assert len(payloads) == 3 and all(json.loads(p)["parts"] == [] and json.loads(s) for p, s in payloads)
    assert rows(db, "SELECT COUNT(*) FROM delivery WHERE payload_json LIKE '%Оценка%'") == [(1,)]  # call 102's card
    assert servers.telegram.deleted == []

    second = run_cli("forget", "--phone", "9991110001", config=config)  # nothing to ask: no --yes needed
    assert second.returncode == 0, second.stderr
    assert "2 call(s) with this number" in second.stdout and "already cleared" in second.stdout
    assert "forget: ***-**-01: nothing left to remove" in second.stdout

    again = run_cli("once", config=config)  # the daemon sends nothing again about them
    assert again.returncode == 0 and len(servers.telegram.messages) == 4
    status = run_cli("status", config=config)
    assert "calls without personal data (retention or forget): 2" in status.stdout
    assert_no_secret(first.stdout, first.stderr, second.stdout, status.stdout)


@pytest.mark.slow
def test_forget_deletes_the_bots_recent_messages_and_lists_the_ones_it_could_not(servers: Servers) -> None:
    seed_forget(servers, int(time.time()))
    config = config_with(servers, delete=True)
    database_already_running(servers.database, int(time.time()) - 7200)  # a running daemon: alerts one by one
    assert run_cli("once", config=config).returncode == 0
    db = servers.tmp / "state" / "salesbot.db"
    by_kind = {
        kind: json.loads(ids)
        for kind, ids in rows(
            db,
            "SELECT d.kind, d.sent_ids_json FROM delivery d JOIN call c ON c.id = d.call_id "
            "WHERE c.note_id IN (101, 106)",
        )
    }
    (card,), (document,), (alert,) = by_kind["card"], by_kind["transcript"], by_kind["alert"]
    servers.telegram.undeletable.add(document)  # Telegram refuses it
    three_days_ago = int(time.time()) - 3 * 24 * 3600
    with sqlite3.connect(db) as connection:  # the alert went out three days ago: not tried
        connection.execute(
            "UPDATE delivery SET done_at = ? WHERE kind = 'alert' AND sent_ids_json = ?",
            (three_days_ago, json.dumps([alert])),
        )

    first = run_cli("forget", "--phone", NUMBER, "--yes", config=config)

    assert first.returncode == 0, first.stderr
    print(first.stdout)
    assert servers.telegram.deleted == [(CHAT_ID, card)]
    assert "will delete 2 Telegram message(s) sent in the last 48 h; 1 older one(s) cannot be deleted" in first.stdout
    assert "forget: 1 Telegram message(s) deleted" in first.stdout
    assert f"could not delete message {document} in chat {CHAT_ID} (Telegram deleteMessage: HTTP 400" in first.stdout
    assert f"could not delete (older than 48 h): message {alert} in chat {CHAT_ID}" in first.stdout
    (logged,) = [line for line in first.stderr.splitlines() if "forget:" in line]
    assert "forget: ***-**-01: 2 call(s) cleared, 1 message(s) deleted, 2 could not be" in logged

    second = run_cli("forget", "--phone", NUMBER, "--yes", config=config)
    assert second.returncode == 0, second.stderr
    assert "nothing left to remove" in second.stdout
    assert servers.telegram.deleted == [(CHAT_ID, card)], "nothing is tried twice"
    assert f"could not delete (refused by Telegram earlier): message {document}" in second.stdout
    (logged,) = [line for line in second.stderr.splitlines() if "forget:" in line]
    assert "nothing left to remove" in logged


def test_forget_wants_a_number(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\ndatabase = "sqlite:///{tmp_path}/db.sqlite"\naudio_dir = "{tmp_path}/audio"\n')
    result = run_cli("forget", "--phone", "12-34", "--yes", config=config)
    assert result.returncode == 2 and "at least 7 digits" in result.stderr
    nobody = run_cli("forget", "--phone", "+79990000000", "--yes", config=config)
    assert nobody.returncode == 0 and "no call with this number" in nobody.stdout


def test_a_database_of_the_previous_schema_gets_the_columns_and_indexes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    store = Store.open(url, 1)
    for statement in (
        "DROP INDEX call_retention_due",  # 0023_retention_keyset, made of these columns
        "DROP INDEX delivery_retention_due",
        "DELETE FROM migration WHERE name = '0023_retention_keyset'",
        # 0020_query_indexes' triggers name `personal_removed_at`: that step goes back too.
        *(f"DROP TRIGGER call_tally_{event}" for event in ("insert", "delete", "update")),
        "DELETE FROM migration WHERE name = '0020_query_indexes'",
        "DROP INDEX call_event_created_at",
        "DROP INDEX call_forgotten_as",
        "ALTER TABLE call DROP COLUMN personal_removed_at",
        "ALTER TABLE call DROP COLUMN forgotten_as",
        "ALTER TABLE delivery DROP COLUMN removed_at",
        "DELETE FROM migration WHERE name = '0011_retention'",
    ):
        store.db.execute_sql(statement)  # type: ignore[no-untyped-call]
    store.close()
    store = Store.open(url, 2)
    assert store.missing_migrations() == []
    assert {"personal_removed_at", "forgotten_as"} <= {c.name for c in store.db.get_columns("call")}
    assert "removed_at" in {c.name for c in store.db.get_columns("delivery")}
    indexed = {tuple(index.columns) for index in store.db.get_indexes("call")}
    assert {("event_created_at",), ("forgotten_as",)} <= indexed
    store.close()
