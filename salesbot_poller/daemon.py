"""The daemon shell: APScheduler runs `run_once` on an interval until SIGTERM/SIGINT.

One cycle at a time (`max_instances=1`, `coalesce=True`), the first at start. A signal only
sets an event; the current cycle takes no new call after it, the scheduler waits for the
running job, and the process exits 0. After a fatal error (a revoked token, say) cycles pause
for `FATAL_PAUSE_SECONDS`, so the journal says it every few minutes, not every second.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType

import peewee
from apscheduler.schedulers.background import BackgroundScheduler

from salesbot_poller.errors import FatalError
from salesbot_poller.pipeline import App, run_once

log = logging.getLogger(__name__)

FATAL_PAUSE_SECONDS = 300


def run_daemon(app: App, clock: Callable[[], datetime]) -> int:
    interval = app.config.poller.interval_seconds
    stop = threading.Event()
    paused_until = [0.0]  # written and read only by the one running job

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: finishing the current step, then exiting", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def cycle() -> None:
        now = clock()
        if stop.is_set() or now.timestamp() < paused_until[0]:
            return
        with app.store.db.connection_context():
            try:
                run_once(app, now, stop.is_set)
            except FatalError as exc:
                pause = max(interval, FATAL_PAUSE_SECONDS)
                paused_until[0] = now.timestamp() + pause
                log.error("cycle stopped: %s (next try in %d s)", exc, pause)
            except peewee.DatabaseError as exc:
                log.error("cycle stopped: database error: %s", exc)

    scheduler = BackgroundScheduler(
        timezone=UTC,
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            # The default (1 s) silently drops a run that starts late; a busy cycle is normal.
            "misfire_grace_time": max(60, int(interval)),
        },
    )
    scheduler.add_job(
        cycle,
        "interval",
        seconds=interval,
        next_run_time=datetime.now(UTC),
        id="cycle",
    )
    scheduler.start()
    log.info("started: polling %s every %g s", app.config.amocrm.base_url, interval)
    while not stop.wait(timeout=1.0):
        pass
    scheduler.shutdown(wait=True)
    log.info("stopped")
    return 0
