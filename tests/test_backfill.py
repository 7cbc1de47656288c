"""`salesbot-poller backfill`: counts first, refuses without confirmation, processes with a
progress line, never moves the live cursor, skips what is already stored."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from salesbot_poller.cli.backfill import parse_moment
from salesbot_poller.pipeline.recovery import exclusive
from tests.conftest import Servers, assert_no_secret, run_cli
from tests.fakes import make_mp3

DAY = 86400


def seed(servers: Servers, now: int) -> str:
    """Three calls two days ago (two answered, one missed) and one recent; returns that day."""
    amo, rec = servers.amo, servers.recordings
    amo.add_user(555, "Иван Петров")
    amo.add_entity("lead", 7001, "ООО Ромашка", 555)
    amo.add_entity("contact", 8001, "Анна", 555)
    day = datetime.fromtimestamp(now - 2 * DAY, UTC).replace(hour=12, minute=0, second=0)
    noon = int(day.timestamp())
    amo.add_call(
        entity_id=7001, note_id=101, duration=125, phone="+79991110001", created_at=noon,
        link=rec.add("/r101.mp3", make_mp3(2.0)), responsible_user_id=555,
    )  # fmt: skip
    amo.add_call(
        entity_type="contact", entity_id=8001, note_id=102, direction="out", duration=95, phone="+79991110002",
        created_at=noon + 60, link=rec.add("/r102.mp3", make_mp3(1.5)), responsible_user_id=555,
    )  # fmt: skip
    amo.add_call(
        entity_type="contact", entity_id=8001, note_id=103, duration=0, call_status=6, phone="+79991110003",
        created_at=noon + 120, link=None, responsible_user_id=555,
    )  # fmt: skip
    amo.add_call(
        entity_id=7001, note_id=104, duration=30, phone="+79991110004", created_at=now - 600,
        link=rec.add("/r104.mp3", make_mp3(1.0)), responsible_user_id=555,
    )  # fmt: skip
    return day.strftime("%Y-%m-%d")


def database(servers: Servers) -> sqlite3.Connection:
    return sqlite3.connect(servers.tmp / "state" / "salesbot.db")


def state(servers: Servers, key: str) -> str:
    with database(servers) as db:
        row = db.execute("select value from state where key = ?", (key,)).fetchone()
    return str(row[0])


@pytest.mark.slow
def test_backfill_counts_refuses_without_yes_then_processes_without_moving_the_cursor(servers: Servers) -> None:
    now = int(time.time())
    day = seed(servers, now)
    config = servers.write_config()

    live = run_cli("once", config=config)  # the live poll: the recent call, and the cursor
    assert live.returncode == 0, live.stderr
    assert len(servers.telegram.messages) == 1
    cursor = state(servers, "events_cursor")

    # A cycle ran a moment ago, yet no service holds the run lock: the lock decides, not the
    # last cycle's age (see test_stop_releases_lock), so the backfill goes on to count.
    refused = run_cli("backfill", "--since", day, "--until", day, config=config)
    assert refused.returncode == 1, refused.stderr
    assert "3 call events in the window, 0 already processed" in refused.stdout
    assert "2 to transcribe (3.7 audio minutes), 1 missed (not alerted)" in refused.stdout
    assert "estimated transcription cost $0.02 at $0.006 per audio minute (whisper-1)" in refused.stdout
    assert "not confirmed: no terminal to ask; pass --yes to process 3 calls" in refused.stdout
    assert len(servers.openai.transcriptions) == 1 and len(servers.telegram.messages) == 1
    with database(servers) as db:
        assert db.execute("select count(*) from call").fetchone()[0] == 1  # counting wrote nothing

    done = run_cli("backfill", "--since", day, "--until", day, "--yes", config=config)
    assert done.returncode == 0, done.stderr
    assert "backfill: call 1 of 2" in done.stdout and "backfill: call 2 of 2" in done.stdout
    assert "done: transcribed=2 notified=2" in done.stdout
    cards = [m["visible_text"] for m in servers.telegram.messages[1:]]
    assert len(cards) == 2 and all("Оценка" in card for card in cards)  # no alert for the old missed call
    assert state(servers, "events_cursor") == cursor
    with database(servers) as db:
        stages = dict(db.execute("select note_id, stage from call").fetchall())
    assert stages == {101: "notified", 102: "notified", 103: "skipped", 104: "notified"}

    again = run_cli("backfill", "--since", day, "--until", day, config=config)
    assert again.returncode == 0 and "3 already processed" in again.stdout and "nothing to do" in again.stdout
    assert len(servers.telegram.messages) == 3
    assert_no_secret(refused.stdout, done.stdout, done.stderr)


@pytest.mark.slow
def test_record_only_leaves_processing_to_the_service(servers: Servers) -> None:
    now = int(time.time())
    day = seed(servers, now)
    done = run_cli("backfill", "--since", day, "--record-only", "--yes", config=servers.write_config())
    assert done.returncode == 0, done.stderr
    assert "recorded 4 calls; the running service processes them" in done.stdout
    assert servers.telegram.messages == [] and servers.openai.transcriptions == []
    with database(servers) as db:
        stages = sorted(stage for (stage,) in db.execute("select stage from call"))
    assert stages == ["ready", "ready", "ready", "skipped"]


def test_dates_are_local_days_and_until_includes_its_day() -> None:
    tz = UTC
    assert parse_moment("2026-11-01", tz) == datetime(2026, 11, 1, tzinfo=tz)
    end = parse_moment("2026-11-01", tz, end_of_day=True)
    assert end == datetime(2026, 11, 1, tzinfo=tz) + timedelta(days=1, seconds=-1)
    assert parse_moment("2026-11-01T09:30", tz) == datetime(2026, 11, 1, 9, 30, tzinfo=tz)
    with pytest.raises(ValueError, match="not a date"):
        parse_moment("yesterday", tz)


@pytest.mark.slow
def test_bad_dates_are_usage_errors(tmp_path: Path, servers: Servers) -> None:
    bad = run_cli("backfill", "--since", "someday", config=servers.write_config())
    assert bad.returncode == 2 and "backfill: 'someday' is not a date" in bad.stderr
    later = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%d")
    future = run_cli("backfill", "--since", later, config=servers.write_config())
    assert future.returncode == 2 and "--since must be before --until" in future.stderr


@pytest.mark.slow
def test_backfill_never_processes_beside_a_running_service(servers: Servers) -> None:
    now = int(time.time())
    day = seed(servers, now)
    config = servers.write_config()
    database_url = f"sqlite:///{servers.tmp / 'state' / 'salesbot.db'}"
    (servers.tmp / "state").mkdir(exist_ok=True)
    with exclusive(database_url):  # what `run` holds while it works the calls
        held = run_cli("backfill", "--since", day, "--until", day, "--yes", config=config)
        recorded = run_cli("backfill", "--since", day, "--until", day, "--yes", "--record-only", config=config)
    assert held.returncode == 3 and "another salesbot-poller (once or run) is processing calls" in held.stderr
    assert recorded.returncode == 0, recorded.stderr
    assert servers.openai.transcriptions == [] and servers.telegram.messages == []
