"""The stages of one call, each committed before the next: download -> transcribe -> analyse
-> render -> notify (a missed call: render -> notify).

Contract:
- Each stage's result is committed before the next stage starts, so a crash resumes from
  the last committed stage and never pays for a transcription or analysis twice; a paid
  result is written again while the database is away (`Store.committed`: a restart).
- `render` fixes every message and amoCRM write of the call (`routing`) as `Delivery` rows,
  the call's own card or alert first (key `call:<id>`), in one transaction, before anything
  is sent. `notify` sends them (`delivery`): each part's message id is committed right after
  Telegram accepts it, so the only window for a duplicate is between that acceptance and
  that commit. A card waits (up to its patience) while an earlier call's card to the same
  chat is rendered and unsent, so one chat's cards keep the order of their calls.
- `transcribe` stores the call's tracker hits (`tracking`) with the transcript, in its
  transaction, with the alert they trigger; the alert is sent right after, before the analysis.
- `transcribe` keeps the prepared audio the transcript was made from for the quote clips
  (`clip_files`, `storage.clip_days` > 0), whatever `storage.keep_audio` says.
- `transcribe` pays the daily budget per upload (`usage`): a call whose next upload would
  cross it waits for the next UTC day and resumes from that upload. A recording longer than
  `poller.max_call_minutes` is transcribed up to there only: the call keeps `cut_minutes`
  (its card says so) and one WARNING names the call.
- `advance` runs a call through its remaining stages; it returns early when a stage puts the
  call off (budget, a busy chat), when `should_stop()` says so between stages, or when the
  worker's claim was taken back (`still_mine()`, asked between stages). With
  `App.dry_run`, a call that reaches delivery is printed instead, and nothing is marked.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from salesbot_poller.domain import TERMINAL_STAGES, CallAnalysis, Planned, Stage
from salesbot_poller.errors import BudgetReached
from salesbot_poller.pipeline import buttons, corrections, delivery, lead_fields, tracking, usage
from salesbot_poller.pipeline.context import App, Cycle, call_context
from salesbot_poller.pipeline.routing import plan_call
from salesbot_poller.pipeline.tracker_messages import card_lines
from salesbot_poller.services import clip_files
from salesbot_poller.services.dialogue import build_dialogue, manager_channel
from salesbot_poller.store import Call

log = logging.getLogger(__name__)

ORDER_POLL_SECONDS = 0.2


def download(app: App, cycle: Cycle, call: Call) -> None:
    path = app.recordings.download(call.link or "", f"call-{call.id}", call.duration or 0)
    app.store.update(call, cycle.now, stage=Stage.DOWNLOADED, audio_path=str(path))


def transcribe(app: App, cycle: Cycle, call: Call) -> None:
    """Transcribe the call's recording, each upload paid through the daily budget: when the
    budget has no room for the next one, the call waits for the next UTC day (not an attempt,
    not a failure) and resumes from that upload; the uploads already answered stay cached."""
    audio = Path(call.audio_path or "")
    if not call.audio_path or not audio.exists():  # lost (tmp cleaned, disk swapped): fetching it again is free
        app.store.update(call, cycle.now, stage=Stage.READY, audio_path=None)
        return
    prices = app.config.openai
    resume_at = app.budget.hold(app.store, prices, cycle.now)
    if resume_at is not None:  # nothing left of today's budget: do not even decode
        app.store.update(call, cycle.now, next_attempt_at=resume_at)
        return
    meter = app.budget.meter(app.store, prices, call.id, cycle.now)
    clip_days = app.config.storage.clip_days
    clips = clip_files.clip_dir(app.config.storage.audio_dir, call.id) if clip_days > 0 else None
    try:
        transcript = app.transcriber.transcribe(audio, meter, keep=clips)
    except BudgetReached as exc:
        app.store.update(call, cycle.now, next_attempt_at=exc.resume_at)
        app.budget.reached(app.store, prices, cycle.now)
        log.info("call %d: waits for the next UTC day: %s; %d upload(s) paid now", call.id, exc, meter.uploads)
        return
    channel = manager_channel(app.config.audio, call.source, call.direction)
    text, metrics = build_dialogue(transcript, channel, call.direction)
    cut = transcript.cut_at_seconds
    cut_minutes = round(cut / 60) if cut is not None else None
    hits, missing = tracking.find(app.config, app.tracker_matcher(), call.profile, text)
    alert = tracking.alert_item(app, call, hits)

    def keep() -> None:
        with app.store.db.atomic():  # the usage is counted once, with the transcript it paid for
            if not transcript.metered:  # a metered transcription recorded each upload as it was paid
                usage.record_transcription(app.store, call.id, cycle.now, transcript)
            app.store.update(
                call,
                cycle.now,
                stage=Stage.TRANSCRIBED,
                transcript=text,
                metrics_json=metrics.model_dump_json() if metrics else None,
                cut_minutes=cut_minutes,
            )
            # The hits, and the alert they trigger, with the transcript they come from.
            app.store.replace_trackers(call.id, hits, missing)
            if alert is not None and app.dry_run is None:
                app.store.enqueue([alert], call.id, cycle.now)

    app.store.committed(keep)  # paid for: written again through a database restart, not paid again
    cycle.transcribed += 1
    tracking.send_alert(app, cycle, call, alert)  # at once: before the analysis and the card
    if cut_minutes is not None:
        log.warning(
            "call %d: the recording is longer than poller.max_call_minutes=%d: only its first %d min transcribed "
            "(its note says %d s)",
            call.id,
            app.config.poller.max_call_minutes,
            cut_minutes,
            call.duration or 0,
        )
    log.info(
        "call %d: transcribed, %d characters, %.0f s of audio sent (%s)",
        call.id,
        len(text),
        transcript.audio_seconds,
        transcript.model or "model not reported",
    )
    if not app.config.storage.keep_audio:
        audio.unlink(missing_ok=True)  # the transcript is stored: the audio is no longer needed


def analyse(app: App, cycle: Cycle, call: Call) -> None:
    transcript = call.transcript or ""
    if not transcript.strip():
        app.store.update(call, cycle.now, stage=Stage.SKIPPED, skip_reason="no speech in the recording")
        cycle.skipped += 1
        return
    analysis = app.analyzer_for(call.profile).analyse(transcript, call_context(app, call))

    def keep() -> None:
        with app.store.db.atomic():  # the tokens are counted once, with the analysis they paid for
            usage.record_analysis(app.store, call.id, cycle.now, analysis)
            app.store.update(call, cycle.now, stage=Stage.ANALYSED, analysis_json=analysis.model_dump_json())

    app.store.committed(keep)  # paid for: written again through a database restart, not paid again
    cycle.analysed += 1
    for problem in analysis.problems:  # a careless answer: what was dropped, so the admin sees a model slip
        log.warning("call %d: analysis: %s", call.id, problem)
    missing = analysis.unverified_quotes
    unverified = f", {missing} quote(s) not found in the transcript" if missing else ""
    condensed = ", on the condensed transcript" if analysis.condensed else ""
    log.info("call %d: analysed, score %s%s%s", call.id, analysis.score, condensed, unverified)


def plan(app: App, call: Call) -> list[Planned]:
    """Everything a call at `analysed`/`missed` sends: its own message first (see `routing`)."""
    analysis = None
    if call.stage != Stage.MISSED:
        analysis = CallAnalysis.model_validate_json(call.analysis_json or "{}")
    hits, missing = app.store.call_trackers(call.id) if analysis is not None else ([], [])
    keyboard, names = None, None
    if analysis is not None:
        analysis, names = corrections.shown(app, call, analysis)  # none yet, unless analysed again
        if corrections.buttons_on(app):
            secret = app.store.callback_secret()
            keyboard = buttons.card_keyboard(analysis, call.id, secret, app.config.storage.clip_days)
    # metrics=None: the slot for a pre-rendered conversation-metrics line (from the audio).
    return plan_call(
        app.config,
        call,
        call_context(app, call),
        analysis,
        app.tz,
        metrics=None,
        trackers=card_lines(hits, missing),
        keyboard=keyboard,
        corrected=names,
    )


def render(app: App, cycle: Cycle, call: Call) -> None:
    items = plan(app, call)
    to = items[0].to  # the call's own message: replies to a missed-call alert follow it
    with app.store.db.atomic():  # every destination is fixed before anything is sent
        app.store.enqueue(items, call.id, cycle.now)
        app.store.update(
            call,
            cycle.now,
            stage=Stage.NOTIFYING,
            chat_id=to.chat_id if to else None,
            thread_id=to.thread_id if to else None,
        )


def _wait_for_earlier_cards(app: App, cycle: Cycle, call: Call, patience: float) -> None:
    own = app.store.find_delivery(delivery.own_key(call.id))
    if own is None or own.done_at is not None:
        return
    waited = 0.0
    while waited < patience and app.store.older_cards_waiting(own, cycle.now):
        time.sleep(ORDER_POLL_SECONDS)
        waited += ORDER_POLL_SECONDS


def notify(app: App, cycle: Cycle, call: Call, *, urgent: bool = False, patience: float = 2.0) -> None:
    """Send the call's own card or alert; once it is out the call is done, and its other
    destinations go out on their own (`delivery.send_extras`): none of them can hold the call
    back or fail it."""
    if not urgent:  # a missed-call alert waits for no card
        _wait_for_earlier_cards(app, cycle, call, patience)
    own = app.store.find_delivery(delivery.own_key(call.id))
    now = cycle.clock()  # the rows' claims are timed now, however long the stages before took
    if own is not None and own.done_at is None:
        delivery.send(app, own, now, urgent=urgent, patience=patience)  # its failure: the call waits
    if own is not None and own.error is not None:  # refused for good: the call is not delivered
        cycle.fail(call, f"its {own.kind} was refused: {own.error}")
        return
    missed = call.kind == "missed"
    app.store.committed(
        lambda: app.store.update(
            call,
            cycle.now,
            stage=Stage.MISSED_ALERTED if missed else Stage.NOTIFIED,
            notified_at=cycle.now,
            last_error=None,
        )
    )
    if missed:
        cycle.alerted += 1
    else:
        cycle.notified += 1
    parts = len(json.loads(own.sent_ids_json)) if own else 0
    log.info("call %d: %s in Telegram (%d message(s))", call.id, "alert sent" if missed else "notified", parts)
    extras = [row for row in app.store.pending(call_id=call.id) if row.kind != lead_fields.KIND]  # batched later
    delivery.send_extras(app, extras, now, patience)


def advance(
    app: App,
    cycle: Cycle,
    call: Call,
    should_stop: Callable[[], bool] = lambda: False,
    *,
    urgent: bool = False,
    patience: float = 2.0,
    still_mine: Callable[[], bool] = lambda: True,
) -> None:
    """Run `call` through its remaining stages, committing each before the next (see above).
    `still_mine()` is asked between stages (a worker renews its claim there): False leaves
    the call, as it stands, to whoever holds it now."""
    while call.stage not in TERMINAL_STAGES:
        if app.dry_run is not None and call.stage in (Stage.ANALYSED, Stage.MISSED, Stage.NOTIFYING):
            preview(app, call)
            return
        if call.next_attempt_at > cycle.now:
            return  # a stage put the call off (the daily budget): its turn is over
        stage = call.stage
        if stage == Stage.READY:
            download(app, cycle, call)
        elif stage == Stage.DOWNLOADED:
            transcribe(app, cycle, call)
        elif stage == Stage.TRANSCRIBED:
            analyse(app, cycle, call)
        elif stage in (Stage.ANALYSED, Stage.MISSED):
            render(app, cycle, call)
        elif stage == Stage.NOTIFYING:
            notify(app, cycle, call, urgent=urgent, patience=patience)
        else:
            raise ValueError(f"call {call.id}: no stage runs from {stage}")
        if call.stage not in TERMINAL_STAGES and should_stop():
            log.info("stop requested: call %d stays at %s until the next start", call.id, call.stage)
            return
        if call.stage not in TERMINAL_STAGES and not still_mine():
            return


def preview(app: App, call: Call) -> None:
    """Dry run: print what the call would send; nothing is stored or marked."""
    assert app.dry_run is not None
    if call.stage == Stage.NOTIFYING:  # rendered by an earlier real run: what is still unsent
        app.dry_run.show([delivery.as_planned(row) for row in app.store.pending(call_id=call.id)])
        return
    app.dry_run.show(plan(app, call))
