"""The two lanes: intake (poll, alerts, follow-ups, digest, weekly report) and work
(answered calls); the bot's commands and retention have lanes of their own (`bot`, the
daemon's retention job).

Contract:
- `intake(app, now, should_stop)`: one pass of the intake lane. Polls amoCRM, resolves new
  calls' notes, sends the due missed-call alerts (urgent: they go before cards in a chat),
  runs the follow-ups (escalation, callback reply) and the digest. It never waits for the
  work lane, nor for retention (`retention.run`, never inside this pass), so a missed call
  is alerted in the pass after its event becomes readable. It logs one summary line, with
  the work lane's counters since the last pass (`Tally`).
- `work_next(app, worker, now, should_stop, tally)`: the work lane's unit. Claims the oldest
  due answered call (`Store.claim_next`: no two threads or processes work the same call; a
  claim older than `poller.claim_lease_seconds` is taken back), moves it through its stages
  (`stages.advance`), renewing its claim between stages and leaving the call if the claim
  was taken back meanwhile, gives it back; False when nothing is due.
- `drain(app, now, workers, should_stop)`: `workers` threads run `work_next` until nothing is
  due (what `once` does between its intake pass and its follow-ups).
- `run_once(app, now)`: intake, drain, then follow-ups and digest: one whole cycle; then a
  retention run (`retention.RUN_BUDGET_SECONDS` at most: a long first pass goes on at the
  next `once`).
- A failure of one call never stops the others: transient failures push it back (`Cycle.defer`),
  permanent ones fail it, unexpected ones quarantine it (`Cycle.quarantine`). `FatalError`
  (credentials, account, chat) and database errors propagate, and no call is marked anything
  because of them.
- A pass (`intake`, `run_once`) that fails as a whole is recorded for `status`, counted in
  `App.health` (see `health`) and raised as `CycleFailed`; `FatalError` and database errors
  are raised as they came.
- `should_stop()` is asked before each call and between stages: once it says yes, no new
  stage starts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime

import peewee

from salesbot_poller.domain import Stage
from salesbot_poller.errors import Busy, FatalError, PermanentError, SalesbotError, TransientError
from salesbot_poller.pipeline import catchup, delivery, followup, lead_fields, retention, storm
from salesbot_poller.pipeline.context import COUNTERS, App, Cycle, Tally
from salesbot_poller.pipeline.health import describe
from salesbot_poller.pipeline.intake import poll, resolve_new
from salesbot_poller.pipeline.recovery import sweep_audio
from salesbot_poller.pipeline.stages import advance
from salesbot_poller.reports import budget_notice, digest, weekly
from salesbot_poller.store import Call
from salesbot_poller.store.claims import owner

log = logging.getLogger(__name__)

LAST_CYCLE_KEY = "last_cycle"
WORK_STAGES = (Stage.READY, Stage.DOWNLOADED, Stage.TRANSCRIBED, Stage.ANALYSED, Stage.NOTIFYING)  # answered
ALERT_STAGES = (Stage.MISSED, Stage.NOTIFYING)  # missed incoming calls
INTAKE_PATIENCE = 3.0  # an alert waits this long for its chat's slot before the next pass tries
ONCE_PATIENCE = 120.0  # `once` delivers everything it can before it exits

Stop = Callable[[], bool]


def _never() -> bool:
    return False


def work_on(
    app: App,
    cycle: Cycle,
    call: Call,
    should_stop: Stop,
    *,
    urgent: bool,
    patience: float,
    still_mine: Callable[[], bool] = lambda: True,
) -> None:
    """`advance` one call, turning its failure into a deferral or a failure of that call only."""
    try:
        advance(app, cycle, call, should_stop, urgent=urgent, patience=patience, still_mine=still_mine)
    except (FatalError, peewee.PeeweeException):
        raise
    except Busy as exc:
        cycle.defer(call, str(exc), exc)
    except TransientError as exc:
        cycle.defer(call, str(exc), exc)
    except PermanentError as exc:
        cycle.fail(call, str(exc))
    except json.JSONDecodeError:
        # An SDK that hands a service's broken JSON through unmapped: the service's fault,
        # worth another try later, and no traceback for it.
        cycle.defer(call, f"stage {call.stage}: the service answered malformed JSON")
    except Exception as exc:  # a bug or data we cannot handle: this call only, kept for `retry`
        log.debug("call %d: unexpected error", call.id, exc_info=True)
        cycle.quarantine(call, f"unexpected error at stage {call.stage}: {describe(exc)}")


def send_alerts(app: App, cycle: Cycle, should_stop: Stop, patience: float = INTAKE_PATIENCE) -> None:
    """The due missed-call alerts, oldest first; too many at once become one summary (`storm`),
    and so do those the first start's look-back found (`catchup`)."""
    due = storm.summarise(app, cycle, app.store.due_calls(cycle.now, ALERT_STAGES, kind="missed"), patience)
    due = catchup.summarise(app, cycle, due, patience)
    for call in due:
        if should_stop():
            return
        work_on(app, cycle, call, should_stop, urgent=True, patience=patience)


def intake_steps(
    app: App, cycle: Cycle, should_stop: Stop = _never, *, follow_ups: bool = True, patience: float = INTAKE_PATIENCE
) -> None:
    """Poll, resolve, alert, then (with `follow_ups`) follow-ups and digest."""
    try:
        poll(app, cycle)
    except FatalError:
        raise
    except SalesbotError as exc:
        cycle.poll_error = str(exc)
        log.warning("amoCRM poll failed: %s; the next cycle resumes from the cursor", exc)
    if not should_stop():
        resolve_new(app, cycle)
    if not should_stop():
        send_alerts(app, cycle, should_stop, patience)
    if not should_stop():
        # Delivered calls' other destinations, each on its own; then the lead fields, batched
        # (not while amoCRM fails: the next pass tries them).
        failed = delivery.retry_extras(app, cycle.now, leave=(lead_fields.KIND,))
        if "amocrm" not in failed:
            lead_fields.send_due(app, cycle.now)
    budget_notice.run(app, cycle)  # the daily budget holds calls back: the alert chat is told once a day
    if follow_ups and not should_stop():
        followup.run(app, cycle)  # missed calls: escalation after the SLA, reply on callback
        digest.run(app, cycle)  # the daily digest, once its hour has come
        weekly.run(app, cycle)  # the weekly team report, once its day and hour have come


class CycleFailed(Exception):
    """The cycle failed as a whole (recorded, logged and counted by `App.health`)."""


def intake(app: App, now: int, should_stop: Stop = _never, tally: Tally | None = None) -> Cycle:
    """One pass of the intake lane, recorded for `status`; see the module contract.

    Raises `FatalError` as it came, and `CycleFailed` for any other error that escaped the
    pass (after counting it in `app.health`)."""
    started = time.monotonic()
    cycle = Cycle(app=app, now=now)
    with _recorded(app, cycle, tally, started, quiet=True):
        intake_steps(app, cycle, should_stop)
    return cycle


@contextmanager
def _recorded(app: App, cycle: Cycle, tally: Tally | None, started: float, *, quiet: bool = False) -> Iterator[None]:
    """Record the cycle for `status` however it ends; an unexpected error becomes `CycleFailed`.
    `quiet` (the daemon's passes): an idle pass logs at DEBUG, and `App.heartbeat` says hourly
    that the daemon is alive."""
    try:
        yield
    except FatalError as exc:
        _finish(app, cycle, tally, started, str(exc))
        raise
    except Exception as exc:
        app.health.failed(app.store, cycle.now, exc)
        with suppress(peewee.PeeweeException):  # the database may be what failed
            _finish(app, cycle, tally, started, f"cycle failed: {describe(exc)}")
        if isinstance(exc, peewee.PeeweeException):
            raise  # callers tell a database error apart (`once` exits 3 for it)
        raise CycleFailed(describe(exc)) from exc
    app.health.succeeded(app.store)
    _finish(app, cycle, tally, started, cycle.poll_error, quiet=quiet)


def _finish(
    app: App, cycle: Cycle, tally: Tally | None, started: float, error: str | None, *, quiet: bool = False
) -> None:
    if tally is not None:
        cycle.add(tally.take())
    seconds = time.monotonic() - started
    data = cycle.summary() | {"at": cycle.now, "seconds": round(seconds, 2), "error": error}
    app.store.set_state(LAST_CYCLE_KEY, json.dumps(data, ensure_ascii=False))
    # Events alone are not work: the poll's window overlaps the last one, so they are read again.
    busy = error is not None or any(getattr(cycle, name) for name in COUNTERS if name != "events")
    if quiet:
        app.heartbeat.record(cycle.now, cycle.new, app.tz)
    log.log(
        app.heartbeat.level(busy) if quiet else logging.INFO,
        "cycle: events=%d new=%d transcribed=%d analysed=%d notified=%d missed_alerts=%d "
        "skipped=%d deferred=%d failed=%d in %.1f s",
        cycle.events,
        cycle.new,
        cycle.transcribed,
        cycle.analysed,
        cycle.notified,
        cycle.alerted,
        cycle.skipped,
        cycle.deferred,
        cycle.failed,
        seconds,
    )


def worker_name() -> str:
    """This thread's claim mark: the process and the thread (`store.claims.owner`)."""
    return owner()


def work_next(
    app: App,
    worker: str,
    now: int,
    should_stop: Stop,
    tally: Tally,
    *,
    patience: float = 2.0,
    exclude: set[int] | None = None,
    on_claim: Callable[[Call], None] | None = None,
    on_fatal: Callable[[Exception], None] | None = None,
) -> bool:
    """Claim the oldest due answered call and move it as far as it goes; False if none is due.

    `exclude`: calls not to claim again (a dry run prints each call once). `on_fatal` hears of
    a fatal or database error before the call's claim is released (so the caller can stop the
    other workers first); the error is raised after.
    """
    if should_stop():
        return False
    lease = app.config.poller.claim_lease_seconds
    call = app.store.claim_next(worker, now, WORK_STAGES, "conversation", exclude or (), lease=lease)
    if call is None:
        return False
    if should_stop():  # a stop (or another worker's fatal error) came while claiming
        app.store.release(call, worker)
        return False
    if on_claim is not None:
        on_claim(call)
    cycle = Cycle(app=app, now=now)

    def still_mine() -> bool:  # between stages: the claim is renewed, so its lease starts again
        if app.store.renew(call, worker, cycle.clock()):
            return True
        log.warning("call %d: its claim was taken back (poller.claim_lease_seconds); left to its new worker", call.id)
        return False

    try:
        work_on(app, cycle, call, should_stop, urgent=False, patience=patience, still_mine=still_mine)
    except (FatalError, peewee.PeeweeException) as exc:
        if on_fatal is not None:
            on_fatal(exc)  # before the claim goes: no other worker may take the call meanwhile
        raise
    finally:
        tally.merge(cycle)
        if exclude is not None and app.dry_run is not None:
            exclude.add(call.id)
        try:
            app.store.release(call, worker)
        except peewee.PeeweeException:  # given back once the worker reaches the database again
            log.warning("call %d: could not release its claim; it goes back when the database answers", call.id)
    return True


def drain(
    app: App,
    now: int,
    workers: int,
    should_stop: Stop = _never,
    tally: Tally | None = None,
    on_claim: Callable[[Call], None] | None = None,
) -> Tally:
    """`workers` threads work the due answered calls until none is left; the first fatal or
    database error stops them all and is raised. `on_claim` hears of each call claimed."""
    tally = tally or Tally()
    errors: list[BaseException] = []
    stop = threading.Event()
    exclude: set[int] = set()

    def stopping() -> bool:
        return stop.is_set() or should_stop()

    def loop() -> None:
        worker = worker_name()
        try:
            with app.store.db.connection_context():
                while work_next(
                    app,
                    worker,
                    now,
                    stopping,
                    tally,
                    patience=ONCE_PATIENCE,
                    exclude=exclude,
                    on_claim=on_claim,
                    on_fatal=lambda exc: stop.set(),
                ):
                    pass
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=loop, name=f"work-{n + 1}") for n in range(max(1, workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return tally


def run_once(app: App, now: datetime, should_stop: Stop = _never, workers: int | None = None) -> Cycle:
    """One whole cycle (`once`): intake, every due answered call, follow-ups and digest."""
    started = time.monotonic()
    moment = int(now.timestamp())
    sweep_audio(app)  # nothing runs yet: what is in audio_dir was left by an interrupted run
    app.store.release_all_claims()
    tally = Tally()
    cycle = Cycle(app=app, now=moment)
    with _recorded(app, cycle, tally, started):
        intake_steps(app, cycle, should_stop, follow_ups=False, patience=ONCE_PATIENCE)
        drain(app, moment, workers or app.config.poller.workers, should_stop, tally)
        if not should_stop():
            lead_fields.send_due(app, moment)  # the leads of the calls just delivered, batched
            followup.run(app, cycle)
            digest.run(app, cycle)
            weekly.run(app, cycle)
            # Last: the calls come first. Once a day, personal data older than storage.retention_days.
            retention.run(app, moment, should_stop)
    return cycle
