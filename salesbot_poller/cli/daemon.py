"""The daemon shell (`run`): the two lanes under APScheduler until SIGTERM/SIGINT.

Contract:
- Intake lane: one job every `poller.interval_seconds` (the first at start; `max_instances=1`,
  `coalesce=True`): `lanes.intake`. It never waits for the work lane.
- Work lane: `poller.workers` jobs, started with the scheduler, each a loop that claims the
  oldest due answered call (`lanes.work_next`) and works it. When nothing is due it waits
  (`idle_seconds`): until the intake lane stores a call (`App.work_ready`, at once), the
  first put-off call comes due (a backoff, the daily budget), or `poller.interval_seconds`
  have passed (what another process changed: `retry`, a claim whose lease ran out). No
  polling of the database while idle.
- A signal only sets an event. No lane takes a new call or starts a new stage after it; the
  daemon waits up to `STOP_GRACE_SECONDS` for the stages in flight, then exits 0. A stage
  still running then (a slow transcription, say) is abandoned: its result was not committed,
  so the call resumes from its last committed stage at the next start — the same as after a
  crash, which the pipeline is built for.
- systemd (`Type=notify`, see `sdnotify`): READY=1 once the scheduler runs, WATCHDOG=1 after
  each intake pass and from the main thread every third of `WatchdogSec` while the lanes make
  progress (a stage committed, or a lane asked whether to stop, within `STALL_SECONDS`),
  STOPPING=1 at stop. A lane stuck longer than that stops the pings and systemd restarts us.
- An intake pass that fails as a whole (a bug, the database) is logged once per distinct error
  (`health`); after `health.RESTART_AFTER` such passes in a row the watchdog is no longer fed,
  so systemd restarts the service; nor once no lane reached the database for
  `health.OUTAGE_RESTART_SECONDS`. A worker meeting a database error waits for it, then gives
  back every claim it held (`health.regain_database`): no call waits for a restart.
- Retention lane: one job every `retention.RUN_EVERY_SECONDS` (`max_instances=1`), each run
  clearing batches for at most `retention.RUN_BUDGET_SECONDS` when a pass is due (once a
  day; a long first pass goes on run after run) and returning at once otherwise. It shares
  no thread with the intake lane, so no poll or alert waits for it; a batch holds the
  database's write lock briefly (`retention`). Its errors are logged (once while they
  repeat) and it tries again at its next run.
- Bot lane (with `telegram.command_chats` and `telegram.admins`, `App.updates`): one job, a
  loop that long-polls the bot's updates (`BOT_POLL_SECONDS`, short enough for a stop to be
  quick) and answers the commands (`bot_lane`). It never waits for the other lanes nor
  they for it; its own errors pause it alone (a fatal one `FATAL_PAUSE_SECONDS`, others
  `BOT_RETRY_SECONDS`), each logged once while it repeats.
- After a fatal error (a revoked token, an unknown Telegram chat) in the intake or work lane
  both of them pause for `FATAL_PAUSE_SECONDS`. The error is logged at ERROR once, with its fix; while it
  persists each repeat is a one-line warning.
"""

from __future__ import annotations

import argparse
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
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from salesbot_poller import bot_lane as bot
from salesbot_poller.app import build_app
from salesbot_poller.cli.common import EXIT_CHECK_FAILED, EXIT_OK, err, redacting_out, utc_now
from salesbot_poller.cli.sdnotify import SystemdNotifier
from salesbot_poller.config import Config
from salesbot_poller.domain import time_text
from salesbot_poller.errors import FatalError, SalesbotError
from salesbot_poller.lanes import WORK_STAGES, CycleFailed, intake, run_once, work_next, worker_name
from salesbot_poller.logs import redact
from salesbot_poller.pipeline import retention
from salesbot_poller.pipeline.context import App, Tally
from salesbot_poller.pipeline.health import regain_database
from salesbot_poller.pipeline.recovery import exclusive, sweep_audio
from salesbot_poller.store import Store
from salesbot_poller.store.postgres import one_line

log = logging.getLogger(__name__)

FATAL_PAUSE_SECONDS = 300
DATABASE_PAUSE_SECONDS = 30  # the bot lane's database error, or a worker's unexpected one: look again after this
STOP_GRACE_SECONDS = 9.0  # systemd's TimeoutStopSec is longer; the issue allows 10 s
# Longer than any one bounded step: a download's deadline (600 s), a transcription's
# timeout (300 s), amoCRM's bounded retries (120 s).
STALL_SECONDS = 1200.0
IDLE_PING_SECONDS = 5.0  # how often the main thread looks, without a watchdog
HALT_SECONDS = 1.0  # after a worker's fatal or database error the others take no new call this long
PAUSED_LOOK_SECONDS = 5.0  # a paused worker looks at the clock this often (no database)
MIN_IDLE_SECONDS = 0.05  # a call put off to "now" is not looked for in a tight loop
BOT_POLL_SECONDS = 5  # a long poll of the bot's updates: a stop waits at most this for it
BOT_RETRY_SECONDS = 30  # after a failed poll (Telegram down, a 429), the bot lane looks again


class Progress:
    """How many lane units are running, and when any of them last showed progress."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._busy = 0
        self.idle = threading.Event()
        self.idle.set()
        self.last = monotonic()

    def begin(self) -> None:
        with self._lock:
            self._busy += 1
            self.last = self._monotonic()
            self.idle.clear()

    def tick(self) -> None:
        self.last = self._monotonic()

    def end(self) -> None:
        with self._lock:
            self._busy -= 1
            self.last = self._monotonic()
            if self._busy == 0:
                self.idle.set()

    def healthy(self, stall_seconds: float = STALL_SECONDS) -> bool:
        """Idle, or busy and progressing."""
        return self.idle.is_set() or self._monotonic() - self.last < stall_seconds


class _FatalLog:
    """Logs a fatal error at ERROR the first time, then a short warning while it repeats."""

    def __init__(self) -> None:
        self.last: str | None = None
        self._lock = threading.Lock()

    def report(self, text: str, pause: int) -> None:
        with self._lock:
            if text != self.last:
                log.error("cycle stopped: %s (next try in %d s)", text, pause)
            else:
                log.warning("cycle stopped again by the same error (see the ERROR above); next try in %d s", pause)
            self.last = text

    def clear(self) -> None:
        with self._lock:
            if self.last is not None:
                log.info("the last fatal error is gone: cycles work again")
            self.last = None


class Daemon:
    """`run`: see the module contract."""

    def __init__(self, app: App, clock: Callable[[], datetime], systemd: SystemdNotifier | None = None) -> None:
        self.app = app
        self.clock = clock
        self.systemd = systemd or SystemdNotifier.from_environ(os.environ)
        self.interval = app.config.poller.interval_seconds
        self.workers = app.config.poller.workers
        self.stop = app.stopping  # the clients' retry waits end on it too (`retry.until_stopped`)
        self.wake = app.work_ready  # rung by the intake lane when it stores a call: idle workers look at once
        self.progress = Progress()
        self.fatal = _FatalLog()
        self.bot_fatal = _FatalLog()  # the bot lane's own: its errors pause only itself
        self.bot_limits = bot.CommandLimits()  # per admin, for the daemon's life
        self.tally = Tally()  # the work lane's counters, until the next intake pass logs them
        self.paused_until = 0.0  # set by whichever lane met a fatal error
        self.retention_error: str | None = None  # the retention lane's last error, logged once
        self._notify_lock = threading.Lock()  # nothing but STOPPING=1 reaches systemd once it is sent

    def tell_systemd(self, *assignments: str) -> None:
        with self._notify_lock:
            if not self.stop.is_set():
                self.systemd.notify(*assignments)

    def should_stop(self) -> bool:
        self.progress.tick()  # the lanes ask between calls and stages: they are moving
        return self.stop.is_set()

    def worker_should_stop(self) -> bool:
        """A worker stops between stages on a signal, and takes no new call during a pause."""
        return self.should_stop() or self._paused(self.clock())

    def _halt(self, exc: Exception) -> None:
        """A worker met a fatal or database error: the other workers take no new call until
        it is dealt with (`_pause_for`, or the worker's own wait after a database error)."""
        self.paused_until = max(self.paused_until, self.clock().timestamp() + HALT_SECONDS)

    def _paused(self, now: datetime) -> bool:
        return now.timestamp() < self.paused_until

    def _pause_for(self, exc: FatalError, now: datetime) -> None:
        pause = max(self.interval, FATAL_PAUSE_SECONDS)
        self.paused_until = max(self.paused_until, now.timestamp() + pause)
        self.fatal.report(str(exc), int(pause))
        self.tell_systemd("WATCHDOG=1", f"STATUS=paused by an error: {str(exc)[:200]}")

    def intake_job(self) -> None:
        """One intake pass (the scheduler runs it every interval)."""
        now = self.clock()
        if self.stop.is_set() or self._paused(now):
            return
        self.progress.begin()
        try:
            with self.app.store.db.connection_context():
                result = intake(self.app, int(now.timestamp()), self.should_stop, self.tally)
            self.fatal.clear()
            at = time_text(now.timestamp(), self.app.tz, "%H:%M:%S")  # `systemctl status` shows it
            self.tell_systemd(
                "WATCHDOG=1",
                f"STATUS=last cycle {at}: notified={result.notified} alerted={result.alerted} "
                f"deferred={result.deferred} failed={result.failed}",
            )
        except FatalError as exc:
            self._pause_for(exc, now)
        except (CycleFailed, peewee.PeeweeException):  # recorded, counted and logged by `App.health`
            failing = self.app.health.count
            self.tell_systemd(f"STATUS=failing: {failing} cycle(s) in a row: {self.app.health.last_error or ''}"[:250])
        finally:
            self.progress.end()

    def retention_job(self) -> None:
        """One run of the retention lane (the scheduler runs it every `retention.RUN_EVERY_SECONDS`)."""
        if self.stop.is_set():
            return
        self.progress.begin()
        try:
            with self.app.store.db.connection_context():
                retention.run(self.app, int(self.clock().timestamp()), self.should_stop)
            if self.retention_error is not None:
                log.info("retention works again")
            self.retention_error = None
        except Exception as exc:  # the database, a bug: the other lanes never notice; the next run tries again
            text = one_line(exc)
            log.log(
                logging.WARNING if text != self.retention_error else logging.DEBUG,
                "retention: %s; tried again in %d s",
                text,
                retention.RUN_EVERY_SECONDS,
                exc_info=not isinstance(exc, peewee.PeeweeException),
            )
            self.retention_error = text
        finally:
            self.progress.end()

    def work_job(self) -> None:
        """One worker of the work lane: claims and works calls until the daemon stops."""
        worker = worker_name()
        with self.app.store.db.connection_context():
            while not self.stop.is_set():
                now = self.clock()
                if self._paused(now):
                    self.stop.wait(min(PAUSED_LOOK_SECONDS, self.paused_until - now.timestamp()))
                    continue
                rung = self.wake.rung()  # before looking: a call stored after this wakes the wait below
                self.progress.begin()
                try:
                    worked = work_next(
                        self.app, worker, int(now.timestamp()), self.worker_should_stop, self.tally, on_fatal=self._halt
                    )
                    idle = None if worked else self.idle_seconds()
                except FatalError as exc:
                    self._pause_for(exc, now)
                    continue
                except peewee.PeeweeException as exc:
                    log.error("worker %s: database error: %s; it waits for the database", worker, one_line(exc))
                    self.app.health.database_lost(now.timestamp())
                    released = regain_database(self.app.store, worker, self.stop.wait)
                    if released is not None:
                        self.app.health.database_back()
                        log.info("worker %s: the database answers again; %d claim(s) given back", worker, released)
                    continue
                except Exception as exc:  # outside any one call (claiming, releasing): the lane goes on
                    self.app.health.failed(self.app.store, int(now.timestamp()), exc)
                    self.stop.wait(DATABASE_PAUSE_SECONDS)
                    continue
                finally:
                    self.progress.end()
                if idle is not None and not self.stop.is_set():
                    self.wake.wait(rung, idle)

    def idle_seconds(self) -> float:
        """How long an idle worker waits at most: until the first put-off answered call comes
        due, never longer than the intake's interval (what other processes change)."""
        now = self.clock().timestamp()
        due = self.app.store.next_due_at(int(now), WORK_STAGES, "conversation")
        if due is None:
            return float(self.interval)
        return min(float(self.interval), max(MIN_IDLE_SECONDS, due - now))

    def bot_job(self) -> None:
        """The bot lane: long-polls the bot's updates and answers them until the daemon stops."""
        with self.app.store.db.connection_context():
            while not self.stop.is_set():
                try:
                    for update in bot.fetch(self.app, BOT_POLL_SECONDS):
                        if self.stop.is_set():  # not taken: its offset is not stored, a restart answers it
                            break
                        self.progress.begin()
                        try:
                            bot.take(self.app, update, int(self.clock().timestamp()), self.bot_limits)
                        finally:
                            self.progress.end()
                    self.bot_limits.log_refused()
                    self.bot_fatal.clear()
                except FatalError as exc:
                    self.bot_fatal.report(f"bot commands: {exc}", FATAL_PAUSE_SECONDS)
                    self.stop.wait(FATAL_PAUSE_SECONDS)
                except SalesbotError as exc:
                    log.warning("bot commands: %s; looking again in %d s", exc, BOT_RETRY_SECONDS)
                    self.stop.wait(max(BOT_RETRY_SECONDS, int(getattr(exc, "retry_after", 0) or 0)))
                except peewee.PeeweeException as exc:
                    log.error("bot commands: database error: %s; looking again in %d s", exc, DATABASE_PAUSE_SECONDS)
                    self.stop.wait(DATABASE_PAUSE_SECONDS)
                except Exception as exc:  # a bug: the lane goes on, the other lanes never notice
                    log.error("bot commands: unexpected error: %s", exc, exc_info=True)
                    self.stop.wait(BOT_RETRY_SECONDS)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s: finishing the current steps, then exiting", signal.Signals(signum).name)
        self.stop.set()
        self.wake.ring()  # idle workers see the stop at once

    def scheduler(self, start: datetime) -> BackgroundScheduler:
        """The lanes' jobs from `start`, in a scheduler not yet started (`run` starts it)."""
        scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(self.workers + 3)},  # intake, retention, bot
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                # The default (1 s) silently drops a run that starts late; a busy pass is normal.
                "misfire_grace_time": max(60, int(self.interval)),
            },
        )
        scheduler.add_job(self.intake_job, "interval", seconds=self.interval, next_run_time=start, id="intake")
        scheduler.add_job(
            self.retention_job, "interval", seconds=retention.RUN_EVERY_SECONDS, next_run_time=start, id="retention"
        )
        for n in range(self.workers):
            scheduler.add_job(self.work_job, "date", run_date=start, id=f"work-{n + 1}")
        if self.app.updates is not None:
            scheduler.add_job(self.bot_job, "date", run_date=start, id="bot")
        return scheduler

    def run(self) -> int:
        """Until SIGTERM/SIGINT; returns the exit code (0)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        with self.app.store.db.connection_context():
            sweep_audio(self.app)  # before any lane runs: what is there was left by an interrupted run
            released = self.app.store.release_all_claims()
        if released:
            log.info("%d call(s) claimed by a process that stopped: back in the queue", released)
        scheduler = self.scheduler(datetime.now(UTC))
        scheduler.start()
        self.systemd.notify("READY=1", "STATUS=polling")
        log.info(
            "started: polling %s every %g s, %d worker(s)", self.app.config.amocrm.base_url, self.interval, self.workers
        )
        self._watch()
        with self._notify_lock:
            self.systemd.notify("STOPPING=1")
        # A worker job not yet handed to its thread is removed by the scheduler as it starts;
        # a shutdown at that very moment removes it too, and APScheduler's thread dies of it.
        deadline = time.monotonic() + 1.0
        while any(job.id.startswith(("work-", "bot")) for job in scheduler.get_jobs()) and time.monotonic() < deadline:
            time.sleep(0.01)
        scheduler.shutdown(wait=False)
        if not self.progress.idle.wait(timeout=STOP_GRACE_SECONDS):
            log.warning(
                "a stage did not finish within %g s: abandoned uncommitted; its call resumes "
                "from its last committed stage at the next start",
                STOP_GRACE_SECONDS,
            )
            sys.stdout.flush()
            logging.shutdown()
            # A worker thread is stuck in a network call; the interpreter would wait for it at
            # exit. Nothing of it is committed, so leaving now is as safe as a crash, and cleaner.
            os._exit(0)
        log.info("stopped")
        return 0

    def _watch(self) -> None:
        """The main thread, until a signal: watchdog pings while the lanes make progress."""
        ping_every = self.systemd.watchdog_seconds / 3 if self.systemd.watchdog_seconds else IDLE_PING_SECONDS
        stalled = False
        while not self.stop.wait(timeout=ping_every):
            # Cycles failing again and again, or a database no lane reaches: a restart may clear
            # what a running process cannot, and systemd shows it (health logs its own line).
            health = self.app.health
            restart = health.restart_due or health.outage_too_long(self.clock().timestamp())
            healthy = self.progress.healthy() and not restart
            if healthy and self.systemd.watchdog_seconds:
                self.tell_systemd("WATCHDOG=1")
            elif not healthy and not stalled and not restart:
                log.error(
                    "a lane made no progress for %d s: no more watchdog pings (systemd restarts us)", STALL_SECONDS
                )
            stalled = not healthy


def run_daemon(app: App, clock: Callable[[], datetime], notifier: SystemdNotifier | None = None) -> int:
    return Daemon(app, clock, notifier).run()


def run(args: argparse.Namespace, config: Config | None) -> int:
    """`once`: one cycle, then every due call (exit 1 when the cycle failed); `run`: the daemon.
    With `--dry-run`, messages and amoCRM writes are printed instead of sent. Both hold the
    database's lock: one process works the calls at a time."""
    assert config is not None  # loaded by `cli.main`
    # A large database's first start after an upgrade migrates for minutes (new indexes):
    # systemd is told it is working, or TimeoutStartSec would kill it mid-migration each time.
    with SystemdNotifier.from_environ(os.environ).extending_start():
        store = Store.open(config.storage.database, int(utc_now().timestamp()))
    try:
        out = redacting_out(config)
        app = build_app(config, utc_now, store, dry_run=out if args.dry_run else None)
        with exclusive(config.storage.database):
            if args.command == "run":
                return run_daemon(app, utc_now)
            try:
                run_once(app, utc_now())
            except CycleFailed as exc:  # logged with its traceback; `status` shows it
                err(f"cycle failed: {redact(str(exc), config.secrets())} (`salesbot-poller status` shows it)")
                return EXIT_CHECK_FAILED
            return EXIT_OK
    finally:
        store.close()
