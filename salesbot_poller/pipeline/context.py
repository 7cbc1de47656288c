"""What every stage of the pipeline is handed: the `App` (services, store, config), the
`Cycle` (one pass's time and counters, and the defer/fail rules) and `call_context`.

This module imports no stage, lane or other pipeline module, so every one of them can import
it without a circle.

Contract of `Cycle`:
- A `Cycle` belongs to one thread: the intake lane makes one per pass, the work lane one per
  claimed call. `now` is fixed for the cycle; `clock()` moves on from it with real time
  (claims and their leases are timed with it). Counters of finished work are merged into a shared `Tally` (thread-safe),
  which the intake lane drains into its summary line.
- `defer(call, error, exc)` pushes a call back (`retry_delay_seconds` x 2^attempt, capped,
  at least the server's retry_after); after `poller.max_attempts` failed attempts, or 24 h of
  trying (counted from when it was first seen, or from its last `retry`), it is `failed`.
  A call waiting for its recording link is `skipped` after 24 h. A `Busy` error (a chat's
  send rate, a paused chat) puts the call off without counting an attempt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import tzinfo
from typing import Protocol

from salesbot_poller.config import Config
from salesbot_poller.domain import (
    MANAGER_UNKNOWN,
    Analyzer,
    CallContext,
    CallSource,
    ConversationMetrics,
    CrmWriter,
    Notifier,
    ObjectionGrouper,
    Planned,
    RecordingFetcher,
    Stage,
    Transcriber,
    UpdateSource,
)
from salesbot_poller.errors import Busy, TransientError
from salesbot_poller.pipeline.health import CycleHealth
from salesbot_poller.pipeline.heartbeat import Heartbeat
from salesbot_poller.pipeline.usage import BudgetGate
from salesbot_poller.services.throttle import ChatPacer
from salesbot_poller.store import Call, Store
from salesbot_poller.trackers import Matcher

log = logging.getLogger(__name__)

GIVE_UP_SECONDS = 24 * 3600
MAX_BACKOFF_SECONDS = 2 * 3600


class WorkBell:
    """Tells idle workers that answered calls may be due.

    `rung()` is a count of rings; a worker reads it before it looks for a due call and, when
    none was, `wait(since, timeout)` returns at once if a ring came meanwhile (so a call stored
    between the look and the wait is never missed), else at the next ring or after `timeout`
    seconds. True when it was rung. Thread-safe; every waiting worker hears a ring.
    """

    def __init__(self) -> None:
        self._rang = threading.Condition()
        self._count = 0

    def ring(self) -> None:
        with self._rang:
            self._count += 1
            self._rang.notify_all()

    def rung(self) -> int:
        with self._rang:
            return self._count

    def wait(self, since: int, timeout: float) -> bool:
        with self._rang:
            return self._rang.wait_for(lambda: self._count != since, timeout)


class Preview(Protocol):
    """A dry run's printer of planned messages and amoCRM writes."""

    def show(self, items: Iterable[Planned]) -> None: ...


@dataclass
class App:
    """Everything the lanes need, built by the composition root (or a test)."""

    config: Config
    store: Store
    source: CallSource
    recordings: RecordingFetcher
    transcriber: Transcriber
    analyzer: Analyzer
    notifier: Notifier
    tz: tzinfo | None = None  # message times; None = the server's local time zone
    crm: CrmWriter | None = None  # amoCRM writes (amocrm.write_back)
    dry_run: Preview | None = None  # print messages and CRM writes instead of sending
    # Telegram's own limits per chat, shared by every thread of the process.
    pacer: ChatPacer = field(default_factory=ChatPacer)
    budget: BudgetGate = field(default_factory=BudgetGate)  # the daily OpenAI budget, for every worker
    health: CycleHealth = field(default_factory=CycleHealth)  # cycles failing as a whole, in a row
    heartbeat: Heartbeat = field(default_factory=Heartbeat)  # the daemon's hourly "alive" line
    # Set when the process stops (the daemon's signal); the clients' retry waits end on it.
    stopping: threading.Event = field(default_factory=threading.Event)
    # Rung when answered calls become due (the intake stored them): idle workers look at once.
    work_ready: WorkBell = field(default_factory=lambda: WorkBell())
    objections: ObjectionGrouper | None = None  # the weekly report's grouping; None: identical texts counted
    updates: UpdateSource | None = None  # the bot's incoming commands (`bot`); None: no command lane

    # A profile with a rubric or prompt of its own has its own analyser, by profile name;
    # every other call is analysed by `analyzer`.
    profile_analyzers: dict[str, Analyzer] = field(default_factory=dict)

    # The `[[trackers]]` compiled once (`tracker_matcher`): every call's transcript is matched by it.
    matcher: Matcher | None = None
    _matcher_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def analyzer_for(self, profile: str | None) -> Analyzer:
        return self.profile_analyzers.get(profile or "", self.analyzer)

    def tracker_matcher(self) -> Matcher:
        """The trackers compiled once per App (compiling lemmatises every phrase)."""
        with self._matcher_lock:
            if self.matcher is None:
                self.matcher = Matcher(self.config.trackers)
            return self.matcher


COUNTERS = ("events", "new", "transcribed", "analysed", "notified", "alerted", "skipped", "deferred", "failed")


@dataclass
class Cycle:
    """One pass's time and counters (see the module contract)."""

    app: App = field(repr=False)
    now: int
    events: int = 0
    new: int = 0
    transcribed: int = 0
    analysed: int = 0
    notified: int = 0
    alerted: int = 0
    skipped: int = 0
    deferred: int = 0
    failed: int = 0
    poll_error: str | None = None
    # When the cycle began (monotonic): `clock()` tells the time `now` + what has passed since.
    started: float = field(default_factory=time.monotonic, repr=False, compare=False)

    def clock(self) -> int:
        """The time now, in the cycle's time base: `now` plus the seconds since it began (the
        time a worker's claims are renewed and taken at, however long its stages took)."""
        return self.now + int(time.monotonic() - self.started)

    def defer(self, call: Call, error: str, exc: Exception | None = None, *, waiting_for_link: bool = False) -> None:
        """Push `call` back with backoff, or give it up (max attempts, or 24 h of trying)."""
        store, now = self.app.store, self.now
        if isinstance(exc, Busy):  # not the call's fault: no attempt is counted
            delay = int(exc.retry_after or 0) + 1
            store.update(call, now, next_attempt_at=now + delay)
            log.debug("call %d: %s; next try in %d s", call.id, error, delay)
            return
        attempts = call.attempts + 1
        if now - max(call.first_seen_at, call.retried_at or 0) >= GIVE_UP_SECONDS:
            if waiting_for_link:
                store.update(
                    call, now, stage=Stage.SKIPPED, skip_reason="no recording link after 24 h", attempts=attempts
                )
                self.skipped += 1
                log.info("call %d: skipped: no recording link after 24 h", call.id)
                return
            self.fail(call, f"gave up after 24 h: {error}", attempts)
            return
        if attempts >= self.app.config.poller.max_attempts and not waiting_for_link:
            self.fail(call, f"gave up after {attempts} attempts: {error}", attempts)
            return
        delay = min(self.app.config.poller.retry_delay_seconds * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
        if isinstance(exc, TransientError) and exc.retry_after:
            delay = max(delay, int(exc.retry_after) + 1)
        store.update(call, now, attempts=attempts, next_attempt_at=now + delay, last_error=error)
        self.deferred += 1
        level = logging.INFO if waiting_for_link else logging.WARNING
        log.log(
            level,
            "call %d (%s/%d): %s; next try in %d s (attempt %d)",
            call.id,
            call.entity_type,
            call.entity_id,
            error,
            delay,
            attempts,
        )

    def fail(self, call: Call, error: str, attempts: int | None = None) -> None:
        self.app.store.update(
            call,
            self.now,
            stage=Stage.FAILED,
            last_error=error,
            attempts=call.attempts + 1 if attempts is None else attempts,
        )
        self.failed += 1
        log.error(
            "call %d (%s/%d) failed at stage %s: %s; `salesbot-poller retry %d` puts it back",
            call.id,
            call.entity_type,
            call.entity_id,
            self.app.store.resume_stage(call).value,
            error,
            call.id,
        )

    def quarantine(self, call: Call, error: str) -> None:
        """Set `call` aside after an unexpected error: kept, listed by `status`, never retried
        by itself (it would fail the same way every cycle); `retry` takes it back."""
        self.app.store.update(call, self.now, stage=Stage.QUARANTINED, last_error=error, attempts=call.attempts + 1)
        self.failed += 1
        log.error(
            "call %d (%s/%d) quarantined: %s; `salesbot-poller retry %d` takes it back once the cause is fixed",
            call.id,
            call.entity_type,
            call.entity_id,
            error,
            call.id,
        )

    def counts(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in COUNTERS}

    def add(self, counts: dict[str, int]) -> None:
        for name, value in counts.items():
            setattr(self, name, getattr(self, name) + value)

    def summary(self) -> dict[str, object]:
        """The counters and the poll error, for `status`."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("app", "started")}


class Tally:
    """Counters of work finished by the work lane since the intake lane last took them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    def merge(self, cycle: Cycle) -> None:
        with self._lock:
            for name, value in cycle.counts().items():
                self._counts[name] += value

    def take(self) -> dict[str, int]:
        with self._lock:
            counts, self._counts = self._counts, dict.fromkeys(COUNTERS, 0)
        return counts


def call_context(app: App, call: Call) -> CallContext:
    """What the analysis prompt and the messages say about `call`."""
    return CallContext(
        direction="in" if call.direction == "in" else "out",
        manager=call.manager_name or MANAGER_UNKNOWN,
        entity_kind=call.entity_type,
        entity_name=call.entity_name or "",
        entity_url=app.source.entity_url(call.entity_type, call.entity_id),
        phone=call.phone or "",
        duration=call.duration or 0,
        started_at=call.event_created_at,
        metrics=ConversationMetrics.model_validate_json(call.metrics_json) if call.metrics_json else None,
        profile=call.profile or "",
        cut_minutes=call.cut_minutes or 0,
    )
