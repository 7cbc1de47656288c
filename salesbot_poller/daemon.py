"""The daemon shell: APScheduler runs `run_once` on an interval until SIGTERM/SIGINT.

Contract:
- One cycle at a time (`max_instances=1`, `coalesce=True`), the first at start.
- A signal only sets an event. The running cycle takes no new call and starts no new stage
  after it; the daemon waits up to `STOP_GRACE_SECONDS` for the stage in flight, then exits
  0. A stage still running then (a slow transcription, say) is abandoned: its result was not
  committed, so the call resumes from its last committed stage at the next start — the
  same as after a crash, which the pipeline is built for.
- systemd (`Type=notify`, see `sdnotify`): READY=1 once the scheduler runs, WATCHDOG=1 after
  each cycle and from the main thread every third of `WatchdogSec` while cycles make
  progress (a stage committed, or the pipeline asked whether to stop, within
  `STALL_SECONDS`), STOPPING=1 at stop. A cycle stuck longer than that stops the pings and
  systemd restarts the service.
- After a fatal error (a revoked token, an unknown Telegram chat) cycles pause for
  `FATAL_PAUSE_SECONDS`. The error is logged at ERROR once, with its fix; while it persists
  each repeat is a one-line warning.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType

import peewee
from apscheduler.schedulers.background import BackgroundScheduler

from salesbot_poller.errors import FatalError
from salesbot_poller.pipeline import App, run_once
from salesbot_poller.sdnotify import SystemdNotifier

log = logging.getLogger(__name__)

FATAL_PAUSE_SECONDS = 300
STOP_GRACE_SECONDS = 9.0  # systemd's TimeoutStopSec is longer; the issue allows 10 s
# Longer than any one bounded step: a download's deadline (600 s), a transcription's
# timeout (300 s), amoCRM's bounded retries (120 s).
STALL_SECONDS = 1200.0
IDLE_PING_SECONDS = 5.0  # how often the main thread looks, without a watchdog


class Progress:
    """Whether a cycle is running, and when it last showed progress (thread-safe enough:
    single writes of floats and an Event)."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self.idle = threading.Event()
        self.idle.set()
        self.last = monotonic()

    def begin(self) -> None:
        self.last = self._monotonic()
        self.idle.clear()

    def tick(self) -> None:
        self.last = self._monotonic()

    def end(self) -> None:
        self.last = self._monotonic()
        self.idle.set()

    def healthy(self, stall_seconds: float = STALL_SECONDS) -> bool:
        """Idle between cycles, or busy and progressing."""
        return self.idle.is_set() or self._monotonic() - self.last < stall_seconds


class _FatalLog:
    """Logs a fatal error at ERROR the first time, then a short warning while it repeats."""

    def __init__(self) -> None:
        self.last: str | None = None

    def report(self, text: str, pause: int) -> None:
        if text != self.last:
            log.error("cycle stopped: %s (next try in %d s)", text, pause)
        else:
            log.warning("cycle stopped again by the same error (see the ERROR above); next try in %d s", pause)
        self.last = text

    def clear(self) -> None:
        if self.last is not None:
            log.info("the last fatal error is gone: cycles work again")
        self.last = None


def run_daemon(app: App, clock: Callable[[], datetime], notifier: SystemdNotifier | None = None) -> int:
    interval = app.config.poller.interval_seconds
    systemd = notifier or SystemdNotifier.from_environ(os.environ)
    stop = threading.Event()
    progress = Progress()
    fatal = _FatalLog()
    paused_until = [0.0]  # written and read only by the one running job
    notify_lock = threading.Lock()  # nothing but STOPPING=1 reaches systemd once it is sent

    def tell_systemd(*assignments: str) -> None:
        with notify_lock:
            if not stop.is_set():
                systemd.notify(*assignments)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: finishing the current step, then exiting", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def should_stop() -> bool:
        progress.tick()  # the pipeline asks between calls and stages: it is moving
        return stop.is_set()

    def cycle() -> None:
        now = clock()
        if stop.is_set() or now.timestamp() < paused_until[0]:
            return
        progress.begin()
        try:
            with app.store.db.connection_context():
                result = run_once(app, now, should_stop)
            fatal.clear()
            tell_systemd(
                "WATCHDOG=1",
                f"STATUS=last cycle {now:%H:%M:%S}: notified={result.notified} alerted={result.alerted} "
                f"deferred={result.deferred} failed={result.failed}",
            )
        except FatalError as exc:
            pause = max(interval, FATAL_PAUSE_SECONDS)
            paused_until[0] = now.timestamp() + pause
            fatal.report(str(exc), int(pause))
            tell_systemd("WATCHDOG=1", f"STATUS=paused by an error: {str(exc)[:200]}")
        except peewee.PeeweeException as exc:
            log.error("cycle stopped: database error: %s", exc)
        finally:
            progress.end()

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
    systemd.notify("READY=1", "STATUS=polling")
    log.info("started: polling %s every %g s", app.config.amocrm.base_url, interval)
    ping_every = systemd.watchdog_seconds / 3 if systemd.watchdog_seconds else IDLE_PING_SECONDS
    stalled = False
    while not stop.wait(timeout=ping_every):
        healthy = progress.healthy()
        if healthy and systemd.watchdog_seconds:
            tell_systemd("WATCHDOG=1")
        elif not healthy and not stalled:
            log.error("a cycle made no progress for %d s: no more watchdog pings (systemd restarts us)", STALL_SECONDS)
        stalled = not healthy
    with notify_lock:
        systemd.notify("STOPPING=1")
    scheduler.shutdown(wait=False)
    if not progress.idle.wait(timeout=STOP_GRACE_SECONDS):
        log.warning(
            "the current stage did not finish within %g s: abandoned uncommitted; the call resumes "
            "from its last committed stage at the next start",
            STOP_GRACE_SECONDS,
        )
        sys.stdout.flush()
        logging.shutdown()
        # The worker thread is stuck in a network call; the interpreter would wait for it at
        # exit. Nothing of it is committed, so leaving now is as safe as a crash, and cleaner.
        os._exit(0)
    log.info("stopped")
    return 0
