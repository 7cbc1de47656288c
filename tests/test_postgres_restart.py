"""A PostgreSQL crash mid-burst: the real daemon (`run`, several workers) against the loopback
servers and a PostgreSQL server of the test's own (tests/private_postgres.py), which is
SIGKILLed while calls are in flight and started again. Every call must reach Telegram
exactly once and be transcribed once, without a restart of the daemon: a worker that lost
its connection gives its claims back once the database answers again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from salesbot_poller.pipeline.messages import mask_phone
from salesbot_poller.store import Call, Store
from tests.conftest import Servers, assert_no_secret
from tests.fakes import make_mp3
from tests.private_postgres import private_postgres
from tests.test_daemon import wait_for

CALLS = 60
WORKERS = 4
TRANSCRIBE_DELAY = 0.3  # workers are inside a stage when the server dies
CRASH_AFTER = 15  # cards delivered before the crash
DOWN_SECONDS = 3.0  # long enough for every worker to meet the loss while the server is away
# Telegram allows one message a second per chat: the cards go to ten private chats (one per
# manager, `telegram.routes`), so the burst takes seconds, not a minute.
MANAGERS = {101 + n: str(5001 + n) for n in range(10)}


def _delivered(servers: Servers, shown: dict[str, str]) -> Counter[str]:
    """How many Telegram messages name each call's (masked) number."""
    counts: Counter[str] = Counter()
    for message in list(servers.telegram.messages):
        for phone, masked in shown.items():
            if masked in message["text"]:
                counts[phone] += 1
    return counts


@pytest.mark.slow
def test_a_postgresql_crash_mid_burst_strands_no_call_and_sends_none_twice(servers: Servers) -> None:
    with private_postgres() as pg:
        servers.database = pg.url
        now = int(time.time())
        phones = [f"+7999444{n:04d}" for n in range(CALLS)]
        shown = {p: mask_phone(p) for p in phones}
        assert len(set(shown.values())) == CALLS
        for n, phone in enumerate(phones):
            servers.amo.add_call(
                entity_id=9000 + n,
                note_id=500 + n,
                duration=60,
                phone=phone,
                link=servers.recordings.add(f"/r/{n}.mp3", make_mp3(0.5, freq=300.0 + 10 * n)),
                created_at=now - 300 + n,
                responsible_user_id=101 + n % len(MANAGERS),
            )
        servers.telegram.known_chats |= set(MANAGERS.values())
        servers.openai.transcribe_delay = TRANSCRIBE_DELAY
        config = servers.write_config(interval_seconds=0.5, retry_delay_seconds=1, workers=WORKERS)
        routes = "".join(f'[telegram.routes.{user}]\nchat_id = "{chat}"\n' for user, chat in MANAGERS.items())
        config.write_text(config.read_text() + routes)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESBOT_", "NOTIFY_", "WATCHDOG_"))}
        log = servers.tmp / "daemon.log"  # a file, not a pipe: a full pipe would stall the daemon
        with log.open("w") as out:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "salesbot_poller", "--config", str(config), "run"],
                stdout=subprocess.DEVNULL,
                stderr=out,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_for(lambda: len(_delivered(servers, shown)) >= CRASH_AFTER, timeout=90)
            pg.crash()
            crashed_at = len(_delivered(servers, shown))
            time.sleep(DOWN_SECONDS)  # the outage itself: the daemon meets it on its own
            pg.start()
            wait_for(lambda: len(_delivered(servers, shown)) == CALLS, timeout=60)
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
        finally:
            daemon.kill()
            daemon.wait(timeout=30)
            err = log.read_text()
            print(f"\n--- the daemon's log: {log}")
        assert daemon.returncode == 0, err[-5000:]

        store = Store.open(pg.url, 0)
        try:
            stages = Counter(c.stage for c in Call.select())
            claimed = Call.select().where(Call.claimed_by.is_null(False)).count()
        finally:
            store.close()
    delivered = _delivered(servers, shown)
    transcriptions = len(servers.openai.transcriptions)
    print(
        f"\ndelivered before the crash: {crashed_at}/{CALLS}; after: {len(delivered)}; transcriptions {transcriptions}"
    )
    assert stages == {"notified": CALLS}, stages
    assert claimed == 0, "every claim given back at the stop"
    assert sorted(delivered.values()) == [1] * CALLS, {p: n for p, n in delivered.items() if n != 1}
    assert transcriptions == CALLS, "a paid transcription is stored once the server is back, not paid again"
    assert "Traceback" not in err, err[-5000:]
    assert_no_secret(err)
