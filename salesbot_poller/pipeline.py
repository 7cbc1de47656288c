"""One cycle: poll, resolve, then move every due call forward, one committed stage at a time.

Contract of `run_once(app, now)`:
- A failure of one call never stops the others. Transient failures push the call back
  (`retry_delay_seconds` x 2^attempt, capped, at least the server's retry_after); after
  `poller.max_attempts` failed attempts, or 24 h of trying (counted from when it was first
  seen, or from its last `retry`), it is `failed` with its last error. Permanent failures
  fail the call at once. A call waiting for its recording link is not failing: it is
  `skipped` after 24 h, whatever its attempt count.
- `should_stop()` is asked before each call and between stages: once it says yes, no new
  stage starts, so a stop waits for one stage at most. (The daemon also reads each question
  as a sign of progress, for the systemd watchdog.)
- `FatalError` (credentials, account, chat) stops the cycle and propagates: no call is
  marked anything because of it.
- Each stage's result is committed before the next stage starts, so a crash resumes from
  the last committed stage and never pays for a transcription or analysis twice.
- Telegram: the message parts are rendered and stored first (stage `notifying`); each part's
  message id is committed right after Telegram accepts it. The only window for a duplicate
  is between Telegram's acceptance and that commit.
- A database error propagates; it is never read as "already processed".
- Every further destination of a call (alert chat, transcripts, amoCRM writes: `routing`) is
  stored with the call's own message and sent after it through `outbox`, each acceptance
  recorded. After the calls: `followup` (missed-call escalation and callback reply) and
  `digest` (the daily digest). With `App.dry_run` these are printed, never sent or marked.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, tzinfo
from pathlib import Path

import peewee

from salesbot_poller import digest, followup, outbox, usage
from salesbot_poller.config import Config
from salesbot_poller.dialogue import build_dialogue, manager_channel
from salesbot_poller.domain import (
    TERMINAL_STAGES,
    Analyzer,
    CallAnalysis,
    CallContext,
    CallSource,
    ConversationMetrics,
    CrmWriter,
    Destination,
    Notifier,
    RecordingFetcher,
    Stage,
    Transcriber,
)
from salesbot_poller.errors import FatalError, PermanentError, SalesbotError, TransientError
from salesbot_poller.intake import poll, resolve_new
from salesbot_poller.recovery import resume_stage, sweep_audio
from salesbot_poller.routing import plan_call
from salesbot_poller.store import Call, Store

log = logging.getLogger(__name__)

GIVE_UP_SECONDS = 24 * 3600
MAX_BACKOFF_SECONDS = 2 * 3600
LAST_CYCLE_KEY = "last_cycle"
WORK_STAGES = [Stage.READY, Stage.DOWNLOADED, Stage.TRANSCRIBED, Stage.ANALYSED, Stage.MISSED, Stage.NOTIFYING]


@dataclass
class App:
    """Everything a cycle needs, built by the composition root (or a test)."""

    config: Config
    store: Store
    source: CallSource
    recordings: RecordingFetcher
    transcriber: Transcriber
    analyzer: Analyzer
    notifier: Notifier
    tz: tzinfo | None = None  # message times; None = the server's local time zone
    crm: CrmWriter | None = None  # amoCRM writes (amocrm.write_back)
    dry_run: outbox.DryRun | None = None  # print messages and CRM writes instead of sending


@dataclass
class Cycle:
    """The counters of one cycle, and the per-call bookkeeping that feeds them."""

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
    telegram_paused: bool = False

    def defer(self, call: Call, error: str, exc: Exception | None = None, *, waiting_for_link: bool = False) -> None:
        """Push `call` back with backoff, or give it up (max attempts, or 24 h of trying)."""
        store, now = self.app.store, self.now
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
            resume_stage(call).value,
            error,
            call.id,
        )

    def summary(self) -> dict[str, object]:
        """The counters, for `status`."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("app", "telegram_paused")}


def call_context(app: App, call: Call) -> CallContext:
    return CallContext(
        direction="in" if call.direction == "in" else "out",
        manager=call.manager_name or "не назначен",
        entity_kind=call.entity_type,
        entity_name=call.entity_name or "",
        entity_url=app.source.entity_url(call.entity_type, call.entity_id),
        phone=call.phone or "",
        duration=call.duration or 0,
        started_at=call.event_created_at,
        metrics=ConversationMetrics.model_validate_json(call.metrics_json) if call.metrics_json else None,
    )


def _download(app: App, cycle: Cycle, call: Call) -> None:
    path = app.recordings.download(call.link or "", f"call-{call.id}")
    app.store.update(call, cycle.now, stage=Stage.DOWNLOADED, audio_path=str(path))


def _transcribe(app: App, cycle: Cycle, call: Call) -> None:
    audio = Path(call.audio_path or "")
    if not call.audio_path or not audio.exists():  # lost (tmp cleaned, disk swapped): fetching it again is free
        app.store.update(call, cycle.now, stage=Stage.READY, audio_path=None)
        return
    resume_at = usage.budget_hold(app.store, app.config.openai, cycle.now)
    if resume_at is not None:  # the daily budget is spent: wait (not an attempt, not a failure)
        app.store.update(call, cycle.now, next_attempt_at=resume_at)
        return
    transcript = app.transcriber.transcribe(audio)
    channel = manager_channel(app.config.audio, call.source, call.direction)
    text, metrics = build_dialogue(transcript, channel, call.direction)
    with app.store.db.atomic():  # the usage is counted once, with the transcript it paid for
        usage.record_transcription(app.store, call.id, cycle.now, transcript)
        app.store.update(
            call,
            cycle.now,
            stage=Stage.TRANSCRIBED,
            transcript=text,
            metrics_json=metrics.model_dump_json() if metrics else None,
        )
    cycle.transcribed += 1
    log.info(
        "call %d: transcribed, %d characters, %.0f s of audio sent (%s)",
        call.id,
        len(text),
        transcript.audio_seconds,
        transcript.model or "model not reported",
    )
    if not app.config.storage.keep_audio:
        audio.unlink(missing_ok=True)  # the transcript is stored: the audio is no longer needed


def _analyse(app: App, cycle: Cycle, call: Call) -> None:
    transcript = call.transcript or ""
    if not transcript.strip():
        app.store.update(call, cycle.now, stage=Stage.SKIPPED, skip_reason="no speech in the recording")
        cycle.skipped += 1
        return
    analysis = app.analyzer.analyse(transcript, call_context(app, call))
    with app.store.db.atomic():  # the tokens are counted once, with the analysis they paid for
        usage.record_analysis(app.store, call.id, cycle.now, analysis)
        app.store.update(call, cycle.now, stage=Stage.ANALYSED, analysis_json=analysis.model_dump_json())
    cycle.analysed += 1
    log.info("call %d: analysed, score %s", call.id, analysis.score)


def plan(app: App, call: Call) -> list[outbox.Planned]:
    """Everything a call at `analysed`/`missed` sends: its own message first (see `routing`)."""
    analysis = None
    if call.stage != Stage.MISSED:
        analysis = CallAnalysis.model_validate_json(call.analysis_json or "{}")
    # metrics=None: the slot for a pre-rendered conversation-metrics line (from the audio).
    return plan_call(app.config, call, call_context(app, call), analysis, app.tz, metrics=None)


def _render(app: App, cycle: Cycle, call: Call) -> None:
    own, *extra = plan(app, call)
    with app.store.db.atomic():  # every destination is fixed before anything is sent
        outbox.enqueue(extra, call.id, cycle.now)
        app.store.update(
            call,
            cycle.now,
            stage=Stage.NOTIFYING,
            outbox_json=json.dumps(own.payload["parts"]),
            message_ids_json="[]",
            chat_id=own.to.chat_id if own.to else None,
            thread_id=own.to.thread_id if own.to else None,
        )


def _notify(app: App, cycle: Cycle, call: Call) -> None:
    sent = call.message_ids
    to = Destination(call.chat_id, call.thread_id) if call.chat_id else None
    for part in call.outbox[len(sent) :]:
        sent.append(app.notifier.send(part, to))
        app.store.update(call, cycle.now, message_ids_json=json.dumps(sent))  # right after acceptance
    outbox.send_all(app, outbox.pending(call_id=call.id), cycle.now)  # other chats, transcripts, amoCRM
    missed = call.kind == "missed"
    app.store.update(
        call,
        cycle.now,
        stage=Stage.MISSED_ALERTED if missed else Stage.NOTIFIED,
        notified_at=cycle.now,
        last_error=None,
    )
    if missed:
        cycle.alerted += 1
    else:
        cycle.notified += 1
    log.info("call %d: %s in Telegram (%d message(s))", call.id, "alert sent" if missed else "notified", len(sent))


STEPS: dict[str, Callable[[App, Cycle, Call], None]] = {
    Stage.READY: _download,
    Stage.DOWNLOADED: _transcribe,
    Stage.TRANSCRIBED: _analyse,
    Stage.ANALYSED: _render,
    Stage.MISSED: _render,
    Stage.NOTIFYING: _notify,
}


def advance(app: App, cycle: Cycle, call: Call, should_stop: Callable[[], bool] = lambda: False) -> None:
    """Run `call` through its remaining stages, committing each before the next.

    Returns early when Telegram is paused, or when `should_stop()` says so between stages.
    """
    while call.stage not in TERMINAL_STAGES:
        if app.dry_run is not None and call.stage in (Stage.ANALYSED, Stage.MISSED, Stage.NOTIFYING):
            _preview(app, call)
            return
        if call.stage == Stage.NOTIFYING and cycle.telegram_paused:
            return  # Telegram asked us to slow down: the message waits for the next cycle
        if call.next_attempt_at > cycle.now:
            return  # a step put the call off (the daily budget): its turn is over
        STEPS[call.stage](app, cycle, call)
        if call.stage not in TERMINAL_STAGES and should_stop():
            log.info("stop requested: call %d stays at %s until the next start", call.id, call.stage)
            return


def _preview(app: App, call: Call) -> None:
    """Dry run: print what the call would send; nothing is stored or marked."""
    assert app.dry_run is not None
    if call.stage == Stage.NOTIFYING:  # rendered by an earlier real run: what is still unsent
        rest = call.outbox[len(call.message_ids) :]
        to = Destination(call.chat_id, call.thread_id) if call.chat_id else None
        items = [outbox.Planned(f"call:{call.id}", call.kind or "card", to, {"parts": rest})] if rest else []
        app.dry_run.show(items + [outbox.as_planned(row) for row in outbox.pending(call_id=call.id)])
        return
    app.dry_run.show(plan(app, call))


def process_due(app: App, cycle: Cycle, should_stop: Callable[[], bool]) -> None:
    for call in app.store.due_calls(cycle.now, WORK_STAGES):
        if should_stop():
            log.info("stop requested: leaving the remaining calls for the next start")
            return
        try:
            advance(app, cycle, call, should_stop)
        except (FatalError, peewee.PeeweeException):
            raise
        except TransientError as exc:
            if call.stage == Stage.NOTIFYING:
                cycle.telegram_paused = True
            cycle.defer(call, str(exc), exc)
        except PermanentError as exc:
            cycle.fail(call, str(exc))
        except json.JSONDecodeError:
            # An SDK that hands a service's broken JSON through unmapped: the service's fault,
            # worth another try later, and no traceback for it.
            cycle.defer(call, f"stage {call.stage}: the service answered malformed JSON")
        except Exception as exc:  # a bug must not lose the call: keep it, with backoff
            log.exception("call %d: unexpected error", call.id)
            cycle.defer(call, f"unexpected {type(exc).__name__}: {exc}")


def run_once(app: App, now: datetime, should_stop: Callable[[], bool] = lambda: False) -> Cycle:
    """One poll cycle, then every due call; see the module contract."""
    started = time.monotonic()
    cycle = Cycle(app=app, now=int(now.timestamp()))
    sweep_audio(app)
    try:
        try:
            poll(app, cycle)
        except FatalError:
            raise
        except SalesbotError as exc:
            cycle.poll_error = str(exc)
            log.warning("amoCRM poll failed: %s; the next cycle resumes from the cursor", exc)
        if not should_stop():
            resolve_new(app, cycle)
        process_due(app, cycle, should_stop)
        if not should_stop():
            followup.run(app, cycle)  # missed calls: escalation after the SLA, reply on callback
            digest.run(app, cycle)  # the daily digest, once its hour has come
    except FatalError as exc:
        _record_cycle(app, cycle, time.monotonic() - started, str(exc))
        raise
    seconds = time.monotonic() - started
    _record_cycle(app, cycle, seconds, cycle.poll_error)
    log.info(
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
    return cycle


def _record_cycle(app: App, cycle: Cycle, seconds: float, error: str | None) -> None:
    data = cycle.summary() | {"at": cycle.now, "seconds": round(seconds, 2), "error": error}
    app.store.set_state(LAST_CYCLE_KEY, json.dumps(data, ensure_ascii=False))
