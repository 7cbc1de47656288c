"""`salesbot-poller backfill --since DAY [--until DAY]`: process the calls of a past window.

Contract of `backfill(app, since, until, now, ...)`:
- It first COUNTS: the call events in [since, until], how many are already in the database
  (they are skipped: de-duplicated by event id, as the live poll does), and from their
  notes the new calls to transcribe, their audio minutes and the estimated cost. Counting
  writes nothing.
- Then it asks `confirm`; declined -> nothing is written, `BackfillOutcome.DECLINED`.
- Then it records the new events and processes every due call with a progress line.
  The live cursor is never moved: the window's events are recorded with the cursor it has
  (or, on a database that never polled, the start of the first live window), in one
  transaction with the cursor read, so a running daemon's cursor cannot be set back.
- Missed calls found by a backfill are not alerted: a call-back alert for last week's call
  is noise. They are stored as skipped, with that reason.
- A daemon that cycled recently is probably running; both processing the same calls could
  post twice, so `backfill` refuses unless `record_only` (the daemon then processes them).
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import Enum

from salesbot_poller.app import build_app
from salesbot_poller.cli.common import (
    EXIT_CHECK_FAILED,
    EXIT_CONFIG,
    EXIT_OK,
    confirmed,
    err,
    redacting_out,
    utc_now,
    when_text,
    zone,
)
from salesbot_poller.config import Config
from salesbot_poller.domain import CallEvent, Stage
from salesbot_poller.lanes import LAST_CYCLE_KEY, WORK_STAGES, drain
from salesbot_poller.pipeline import intake
from salesbot_poller.pipeline.context import App, Cycle, Tally
from salesbot_poller.pipeline.prices import audio_price
from salesbot_poller.pipeline.recovery import exclusive
from salesbot_poller.store import Call, Store

log = logging.getLogger(__name__)

# What `backfill()` assumes when not told (whisper-1's list price); the command passes the
# configured model's price (`prices.audio_price`), None when it has none.
DEFAULT_PRICE_PER_AUDIO_MINUTE_USD = 0.006
MISSED_SKIP_REASON = "missed call found by a backfill: not alerted (too old to call back)"


class BackfillOutcome(Enum):
    DONE = "done"
    NOTHING = "nothing to do"
    DECLINED = "declined"
    DAEMON_ACTIVE = "daemon active"


@dataclass
class Estimate:
    """What a backfill of a window would do."""

    events: int = 0  # call events in the window
    already_seen: int = 0  # already in the database: skipped
    to_transcribe: int = 0  # answered calls long enough (with a recording link or waiting for one)
    missed: int = 0  # missed incoming calls: stored, not alerted
    skipped: int = 0  # too short, unanswered outgoing
    unreadable: int = 0  # note missing or malformed: recorded, looked at again later
    audio_seconds: int = 0  # sum of the durations of the calls to transcribe
    by_profile: dict[str, int] = field(default_factory=dict)  # calls to transcribe per `[[profiles]]` name

    @property
    def new(self) -> int:
        return self.events - self.already_seen

    @property
    def audio_minutes(self) -> float:
        return self.audio_seconds / 60

    def cost(self, price_per_minute: float) -> float:
        return self.audio_minutes * price_per_minute


def parse_moment(value: str, tz: tzinfo, *, end_of_day: bool = False) -> datetime:
    """`2026-11-01` (a day in `tz`; with `end_of_day`, the end of that day) or an ISO datetime."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            start = datetime.combine(day + timedelta(days=1) if end_of_day else day, time(), tz)
            return start - timedelta(seconds=1) if end_of_day else start
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a date (2026-11-01) or a date and time (2026-11-01T09:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def estimate(app: App, events: list[CallEvent]) -> Estimate:
    """Count what backfilling `events` would do (reads amoCRM notes; writes nothing)."""
    result = Estimate(events=len(events))
    seen = app.store.seen_event_ids([e.event_id for e in events])
    fresh = [e for e in events if e.event_id not in seen]
    result.already_seen = len(events) - len(fresh)
    for call in intake.foresee(app, fresh):
        if call.note is None:
            result.unreadable += 1
        elif call.stage in (Stage.READY, Stage.NEW):
            result.to_transcribe += 1
            result.audio_seconds += call.note.duration or 0
            if call.profile:
                result.by_profile[call.profile] = result.by_profile.get(call.profile, 0) + 1
        elif call.stage == Stage.MISSED:
            result.missed += 1
        else:
            result.skipped += 1
    return result


def daemon_last_cycle_age(app: App, now: int) -> int | None:
    """Seconds since the last cycle recorded in the database, or None."""
    raw = app.store.get_state(LAST_CYCLE_KEY)
    if not raw:
        return None
    at = json.loads(raw).get("at")
    return now - int(at) if isinstance(at, int) else None


def backfill(
    app: App,
    since: datetime,
    until: datetime,
    now: datetime,
    out: Callable[[str], None],
    confirm: Callable[[Estimate], bool],
    *,
    record_only: bool = False,
    locked: bool = False,
    price_per_minute: float | None = DEFAULT_PRICE_PER_AUDIO_MINUTE_USD,
) -> BackfillOutcome:
    """Count, confirm, record and process the calls of [since, until]; see the module contract.
    `locked`: the caller holds the run lock, so no service runs whatever the last cycle's age."""
    now_ts = int(now.timestamp())
    start, end = int(since.timestamp()), min(int(until.timestamp()), now_ts - intake.SETTLE_SECONDS)
    if start >= end:
        raise ValueError("--since must be before --until (and in the past)")
    age = daemon_last_cycle_age(app, now_ts)
    # The run lock says for sure; without one (a database with no lock) a recent cycle is the sign.
    busy = not locked and age is not None and age < max(3 * app.config.poller.interval_seconds, 180)
    if busy and not record_only:
        out(
            f"backfill: the service looks active (its last cycle was {age} s ago): stop it first "
            "(systemctl stop salesbot), or pass --record-only to let it process the backfilled calls"
        )
        return BackfillOutcome.DAEMON_ACTIVE
    out(f"backfill: {when_text(start, app.tz)} .. {when_text(end, app.tz)}")
    batch = app.source.call_events(start, end)
    counted = estimate(app, batch.events)
    out(f"backfill: {counted.events} call events in the window, {counted.already_seen} already processed (skipped)")
    out(
        f"backfill: {counted.new} new calls: {counted.to_transcribe} to transcribe "
        f"({counted.audio_minutes:.1f} audio minutes), {counted.missed} missed (not alerted), "
        f"{counted.skipped} too short, unanswered or matching no profile, {counted.unreadable} with an unreadable note"
    )
    if counted.by_profile:
        per = ", ".join(f"«{name}» {n}" for name, n in sorted(counted.by_profile.items()))
        out(f"backfill: to transcribe per profile: {per}")
    model = app.config.openai.transcription_model
    if price_per_minute is None:
        out(f"backfill: transcription cost unknown: price not set for {model} (openai.audio_price_per_minute_usd)")
    else:
        out(
            f"backfill: estimated transcription cost ${counted.cost(price_per_minute):.2f} at "
            f"${price_per_minute} per audio minute ({model}); analysis adds a little"
        )
    if counted.new == 0:
        out("backfill: nothing to do")
        return BackfillOutcome.NOTHING
    if not confirm(counted):
        return BackfillOutcome.DECLINED
    _record(app, batch.events, now_ts)
    cycle = Cycle(app=app, now=now_ts)
    intake.resolve_new(app, cycle)  # reads the notes, so missed calls are known before anyone alerts them
    _skip_missed(app, [e.event_id for e in batch.events], now_ts)
    if record_only:
        out(f"backfill: recorded {counted.new} calls; the running service processes them on its next cycles")
        return BackfillOutcome.DONE
    total = len(app.store.due_calls(now_ts, WORK_STAGES))
    tally = Tally()
    position = 0
    lock = threading.Lock()

    def progress(call: Call) -> None:  # each worker, as it claims a call
        nonlocal position
        with lock:
            position += 1
            out(f"backfill: call {position} of {total} (call {call.id})")

    drain(app, now_ts, app.config.poller.workers, tally=tally, on_claim=progress)
    cycle.add(tally.take())
    waiting = len(app.store.due_calls(now_ts + 10**9))  # unfinished, whenever due
    out(
        f"backfill: done: transcribed={cycle.transcribed} notified={cycle.notified} skipped={cycle.skipped} "
        f"deferred={cycle.deferred} failed={cycle.failed}; {waiting} unfinished call(s) are retried by the service"
    )
    return BackfillOutcome.DONE


def _record(app: App, events: list[CallEvent], now: int) -> None:
    """Store the window's new events (dedup by id) without moving the live cursor."""
    with app.store.db.atomic():  # the cursor is read and written back in one transaction
        cursor = app.store.cursor()
        keep = cursor if cursor is not None else now - app.config.poller.initial_lookback_minutes * 60
        app.store.record_window(events, [], keep, now)


def _skip_missed(app: App, event_ids: list[str], now: int) -> None:
    for call in app.store.missed_by_event(event_ids):
        app.store.update(call, now, stage=Stage.SKIPPED, skip_reason=MISSED_SKIP_REASON)


def run(args: argparse.Namespace, config: Config | None) -> int:
    """`backfill --since DAY [--until DAY] [--yes] [--record-only]`: dates are in
    `amocrm.timezone` (unset: the server's zone), as in the messages. Exit 1 when not
    confirmed or the service is running."""
    assert config is not None  # loaded by `cli.main`
    local = zone(config) or datetime.now().astimezone().tzinfo or UTC
    try:
        since = parse_moment(args.since, local)
        until = parse_moment(args.until, local, end_of_day=True) if args.until else utc_now()
    except ValueError as exc:
        err(f"backfill: {exc}")
        return EXIT_CONFIG
    out = redacting_out(config, flush=True)

    def confirm(estimate: Estimate) -> bool:
        return confirmed(
            f"Process {estimate.new} calls now?",
            yes=args.yes,
            command="backfill",
            action=f"process {estimate.new} calls",
            out=out,
        )

    store = Store.open(config.storage.database, int(utc_now().timestamp()))
    try:
        app = build_app(config, utc_now, store)
        # The lock `once`/`run` hold: a backfill that processes calls never works beside them
        # (--record-only only adds calls, which the running service then processes).
        with nullcontext(False) if args.record_only else exclusive(config.storage.database) as locked:
            outcome = backfill(
                app,
                since,
                until,
                utc_now(),
                out,
                confirm,
                record_only=args.record_only,
                locked=locked,
                price_per_minute=audio_price(config.openai, config.openai.transcription_model),
            )
    except ValueError as exc:
        err(f"backfill: {exc}")
        return EXIT_CONFIG
    finally:
        store.close()
    return EXIT_OK if outcome in (BackfillOutcome.DONE, BackfillOutcome.NOTHING) else EXIT_CHECK_FAILED
