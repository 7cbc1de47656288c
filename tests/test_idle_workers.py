"""The daemon's idle workers: they do not poll the database, and they wake at once when the
intake lane stores a call, or when a put-off call comes due, with a long interval configured
(the interval only bounds what other processes change)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from salesbot_poller.cli.daemon import Daemon
from salesbot_poller.cli.sdnotify import SystemdNotifier
from salesbot_poller.domain import CallEvent, CallNote
from salesbot_poller.lanes import intake
from salesbot_poller.store import Call
from tests.builder import T0, Rig, already_running, build_rig
from tests.test_daemon import wait_for

INTERVAL = 60  # far longer than any wait below: a worker that waits for it fails the test
PROMPT = 2.0  # "at once": well under the interval, with room for a loaded machine


class CallQueries(logging.Handler):
    """Counts the SQL statements that read the calls table (peewee logs each one it runs)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        sql = record.msg[0] if isinstance(record.msg, tuple) else str(record.msg)
        if isinstance(sql, str) and sql.startswith("SELECT") and 'FROM "call"' in sql:
            self.count += 1


@pytest.fixture
def queries() -> Iterator[CallQueries]:
    handler = CallQueries()
    logger = logging.getLogger("peewee")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class Worker:
    """One worker of the daemon's work lane on a thread of its own."""

    def __init__(self, rig: Rig) -> None:
        started = time.monotonic()
        self.daemon = Daemon(
            rig.app, lambda: T0 + timedelta(seconds=time.monotonic() - started), SystemdNotifier(None, None)
        )
        self.thread = threading.Thread(target=self.daemon.work_job, name="work-1")

    def __enter__(self) -> Daemon:
        self.thread.start()
        return self.daemon

    def __exit__(self, *exc: object) -> None:
        self.daemon.stop.set()
        self.daemon.wake.ring()  # as the daemon's signal handler does
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def make_rig(tmp_path: Path) -> Rig:
    rig = build_rig(tmp_path, poller={"interval_seconds": INTERVAL, "workers": 1})
    already_running(rig.app)
    return rig


def add_call(rig: Rig, n: int) -> None:
    moment = int(T0.timestamp()) - 60
    rig.source.add(
        CallEvent(f"01EVENT{n:019d}", "in", "leads", 7000 + n, 100 + n, moment),
        CallNote(100 + n, 125, "+79991234567", f"https://rec.example/{n}.mp3", 4, "MangoOfficeWidget", 555, None),
        f"ООО Ромашка-{n}",
    )


@pytest.mark.slow
def test_an_idle_worker_does_not_poll_and_wakes_at_once_when_the_intake_stores_a_call(
    tmp_path: Path, queries: CallQueries
) -> None:
    rig = make_rig(tmp_path)
    with Worker(rig):
        wait_for(lambda: queries.count >= 2, timeout=10)  # it looked for a due call, and for a put-off one
        time.sleep(0.2)  # settled into its wait
        looked = queries.count
        time.sleep(2.5)  # idle: nothing is due, nothing is stored
        assert queries.count == looked, "an idle worker polled the database"

        add_call(rig, 1)
        intake(rig.app, int(T0.timestamp()))
        stored = time.monotonic()
        wait_for(lambda: rig.notifier.log != [], timeout=INTERVAL / 2)
        woke = time.monotonic() - stored
    assert rig.recordings.downloads == ["https://rec.example/1.mp3"]
    assert woke < PROMPT, f"the worker took {woke:.1f} s to take the stored call (interval {INTERVAL} s)"


@pytest.mark.slow
def test_an_idle_worker_wakes_when_a_put_off_call_comes_due(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    add_call(rig, 1)
    intake(rig.app, int(T0.timestamp()))
    call = Call.get()
    put_off = 2  # seconds: a backoff's next attempt, with no intake pass to ring for it
    rig.app.store.update(call, int(T0.timestamp()), next_attempt_at=int(T0.timestamp()) + put_off)
    started = time.monotonic()
    with Worker(rig):
        wait_for(lambda: rig.notifier.log != [], timeout=INTERVAL / 2)
        took = time.monotonic() - started
    assert put_off - 1 <= took < put_off + PROMPT, f"taken after {took:.1f} s, due after {put_off} s"
