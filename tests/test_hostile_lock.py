"""The database locked by another process right after Telegram accepted a message:
the commit of the accepted message id must not be lost (else the next cycle sends the card
again). Through the real command line against the loopback servers: the moment the fake
Telegram has accepted the card, and before `once` hears of it, a child process takes the
database's write lock and holds it past SQLite's busy timeout (30 s), so the first commit of the
message id really fails with "database is locked"; `Store.committed` must write it again once
the lock is gone, and the card must go out exactly once."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from salesbot_poller.store import BUSY_TIMEOUT_MS
from tests.conftest import Servers, assert_no_secret, run_cli
from tests.fakes import make_mp3

HOLD_SECONDS = BUSY_TIMEOUT_MS / 1000 + 5  # longer than one try may wait

# Another process: takes the write lock, says so, holds it, commits a write of its own, says so.
LOCKER = r"""
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
db.execute("BEGIN EXCLUSIVE")
db.execute("INSERT OR REPLACE INTO state (key, value) VALUES ('hostile_lock', 'held')")
print("locked", time.time(), flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
print("released", time.time(), flush=True)
db.close()
"""

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", re.M)


def _logged_at(stderr: str, needle: str) -> list[float]:
    """Unix times of the stderr lines containing `needle` (`once` logs in UTC: run_cli sets TZ)."""
    times = []
    for line in stderr.splitlines():
        match = STAMP.match(line)
        if match and needle in line:
            stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC)
            times.append(stamp.timestamp())
    return times


@pytest.mark.slow
def test_a_lock_right_after_telegram_accepted_the_card_is_waited_out_and_nothing_is_sent_twice(
    servers: Servers,
) -> None:
    database = servers.tmp / "state" / "salesbot.db"
    servers.amo.add_call(
        entity_id=7001,
        note_id=1,
        duration=60,
        phone="+79990000001",
        link=servers.recordings.add("/r/1.mp3", make_mp3(1.0)),
        created_at=int(time.time()) - 60,
    )
    lockers: list[subprocess.Popen[str]] = []
    locked_at: list[float] = []

    def lock_the_database(message: dict[str, Any]) -> None:
        """Telegram has accepted `message`; `once` has not heard of it yet."""
        if lockers:
            return  # the card only
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(database), str(HOLD_SECONDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        lockers.append(locker)
        assert locker.stdout is not None
        word, at = locker.stdout.readline().split()  # the lock is held before Telegram answers
        assert word == "locked"
        locked_at.append(float(at))

    servers.telegram.on_accept = lock_the_database
    config = servers.write_config()
    try:
        started = time.monotonic()
        result = run_cli("once", config=config, timeout=HOLD_SECONDS + 60)
        took = time.monotonic() - started
        assert len(lockers) == 1, "the card was never accepted"
        out, err = lockers[0].communicate(timeout=HOLD_SECONDS + 10)
    finally:
        for locker in lockers:
            if locker.poll() is None:
                locker.kill()
                locker.wait()
    assert lockers[0].returncode == 0, err
    released_at = float(out.split()[1])

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert_no_secret(result.stdout, result.stderr)
    assert servers.telegram.errors == []
    assert took >= HOLD_SECONDS, "`once` finished while the lock was still held"

    # The first commit of the message id waited the whole busy timeout and failed; the retry
    # (after the 0.5 s backoff) waited for the lock and got through: one warning, not more.
    retries = _logged_at(result.stderr, "database busy (database is locked): the record of a sent message")
    assert len(retries) == 1, result.stderr
    assert "written again in 0.5 s" in result.stderr
    waited = retries[0] - locked_at[0]
    assert BUSY_TIMEOUT_MS / 1000 - 1 <= waited < HOLD_SECONDS, f"first try failed after {waited:.1f} s"
    (delivered,) = _logged_at(result.stderr, "card (call:1) delivered")
    assert delivered >= released_at - 0.05, "recorded while the other process held the lock?"
    assert "call 1: notified in Telegram (1 message(s))" in result.stderr

    with sqlite3.connect(database) as db:
        stages = list(db.execute("select stage, last_error from call"))
        rows = list(db.execute("select sent_ids_json, done_at is not null from delivery where key = 'call:1'"))
        foreign = list(db.execute("select value from state where key = 'hostile_lock'"))
    assert stages == [("notified", None)]
    (message,) = servers.telegram.messages
    assert "+7 999 ***-**-01" in message["text"]  # the card's number, masked (telegram.mask_phones)
    assert rows == [(json.dumps([message["message_id"]]), 1)], "the accepted id was committed"
    assert foreign == [("held",)], "the other process's own write is kept"

    again = run_cli("once", config=config)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert servers.telegram.count("sendMessage") == 1 and len(servers.telegram.messages) == 1, "sent twice"
    assert len(lockers) == 1


@pytest.mark.slow
def test_the_locker_really_blocks_a_writer(tmp_path: Path) -> None:
    """The lock holder above is a real write lock: another connection's write waits for it and,
    past its busy timeout, fails with "database is locked" (what `Store.committed` looks for)."""
    database = tmp_path / "x.db"
    with sqlite3.connect(database) as db:
        db.execute("pragma journal_mode=wal")
        db.execute("create table state (key text primary key, value text)")
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(database), "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert locker.stdout is not None
        assert locker.stdout.readline().startswith("locked")
        writer = sqlite3.connect(database, isolation_level=None, timeout=0.3)
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            writer.execute("insert into state values ('mine', 'x')")
        assert time.monotonic() - started >= 0.25, "it waited its busy timeout first"
        writer.close()
    finally:
        locker.communicate(timeout=10)
    assert locker.returncode == 0
