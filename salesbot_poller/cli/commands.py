"""The `status` and `retry` commands: what the admin reads at the terminal.

Neither prints a secret: they read only the database (and the CLI redacts every line they
print). They import no service client, so they start fast.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo

from salesbot_poller.cli.common import (
    EXIT_CHECK_FAILED,
    EXIT_CONFIG,
    EXIT_OK,
    err,
    load,
    redacting_out,
    utc_now,
    when_text,
    zone,
)
from salesbot_poller.config import Config
from salesbot_poller.domain import SET_ASIDE_STAGES, Stage
from salesbot_poller.lanes import LAST_CYCLE_KEY
from salesbot_poller.pipeline import retention, usage
from salesbot_poller.pipeline.health import RESTART_AFTER, failing_record
from salesbot_poller.services.amocrm_parse import parse_event
from salesbot_poller.services.throttle import AmoPause, AmoPaused
from salesbot_poller.store import Call, Store


def profile_lines(per_profile: dict[str, dict[str, int]]) -> list[str]:
    """Calls per profile, one line each, when any call was given a named profile."""
    named = {name: stages for name, stages in per_profile.items() if name}
    if not named:
        return []
    lines = ["calls per profile:"]
    for name, stages in sorted(named.items()):
        parts = ", ".join(f"{stage} {count}" for stage, count in sorted(stages.items()))
        lines.append(f"  «{name}»: {sum(stages.values())} ({parts})")
    return lines


def status(store: Store, out: Callable[[str], None], config: Config | None = None, now: int | None = None) -> None:
    """Calls per stage, the last cycle, the cursor, the latest errors, and (with `config`)
    today's and this month's OpenAI usage and estimated cost. Times in `amocrm.timezone`
    (without it, or without `config`, the server's zone), the zone named."""
    tz = zone(config)
    counts = store.stage_counts()
    out(f"calls: {sum(counts.values())}")
    for stage in Stage:
        if counts.get(stage.value):
            out(f"  {stage.value:<15} {counts[stage.value]}")
    for line in profile_lines(store.profile_counts()):
        out(line)
    raw = store.get_state(LAST_CYCLE_KEY)
    if raw:
        last = json.loads(raw)
        counters = " ".join(
            f"{k}={last.get(k, 0)}"
            for k in (
                "events",
                "new",
                "transcribed",
                "analysed",
                "notified",
                "alerted",
                "skipped",
                "deferred",
                "failed",
            )
        )
        result = f"error: {last['error']}" if last.get("error") else "ok"
        out(f"last cycle: {when_text(last.get('at'), tz)}, {last.get('seconds', 0)} s, {result}")
        out(f"  {counters}")
    else:
        out("last cycle: never")
    failing = failing_record(store)
    if failing:
        out(
            f"FAILING: {failing['count']} cycle(s) in a row since {when_text(failing['since'], tz)}, "
            f"the last at {when_text(failing['at'], tz)}: {failing['error']}"
            + (
                " (the watchdog is no longer fed: systemd restarts the service)"
                if failing["count"] >= RESTART_AFTER
                else ""
            )
        )
    out(f"cursor: {when_text(store.cursor(), tz)}")
    moment = int(time.time()) if now is None else now
    try:  # a 403 (or a long Retry-After) pauses amoCRM; the admin should see until when, and why
        AmoPause(lambda: datetime.fromtimestamp(moment, UTC), store, tz).check()
    except AmoPaused as exc:
        out(f"amocrm: {exc}")
    errors = store.recent_errors()
    out("last errors:" if errors else "last errors: none")
    for call in errors:
        retry = "" if call.stage == Stage.FAILED else f", next try {when_text(call.next_attempt_at, tz)}"
        out(
            f"  call {call.id} ({call.entity_type}/{call.entity_id}, {call.stage}, attempt {call.attempts}{retry}): "
            f"{call.last_error}"
        )
    if config is not None:
        for line in usage.status_lines(store, config.openai, moment):
            out(line)
    for stage, title in ((Stage.FAILED, "failed calls"), (Stage.QUARANTINED, "quarantined calls")):
        total = counts.get(stage.value, 0)  # the latest are read, not every one of them
        out(f"{title}: {total}" + (" (`salesbot-poller retry --failed` puts them back)" if total else ""))
        for call in store.failed_calls((stage,), limit=FAILED_SHOWN) if total else []:
            out(f"  {_failure_line(store, call, tz)}")
        if total > FAILED_SHOWN:
            out(f"  ... and {total - FAILED_SHOWN} more")
    waiting, given_up, rows = store.failing_deliveries()
    if rows:
        out(f"destinations failing: {waiting} message(s)/write(s) wait for another try, {given_up} given up")
        for row in rows:
            state = (
                "given up" if row.done_at else f"attempt {row.attempts}, next try {when_text(row.next_attempt_at, tz)}"
            )
            out(f"  {row.kind} {row.key} ({state}): {row.error}")
    count, events = store.set_aside_events()
    out(f"events set aside: {count}" + (" (malformed, or could not be stored; the latest:)" if count else ""))
    for event in events:
        out(f"  event {event.event_id} at {when_text(event.seen_at, tz)}: {event.error}")
    for line in retention_lines(store, config):
        out(line)


def retention_lines(store: Store, config: Config | None) -> list[str]:
    """When retention last finished a pass and what it removed, how far the pass under way
    is; how many calls hold no personal data."""
    days = config.storage.retention_days if config is not None else None
    tz = zone(config)
    setting = "" if days is None else f" (storage.retention_days = {days}{': off' if days == 0 else ''})"
    last = retention.last_run(store.get_state(retention.STATE_KEY))
    if last is None:
        head = f"retention: never ran{setting}"
    else:
        head = (
            f"retention: last ran {when_text(last.at, tz)}{setting}: {last.calls} call(s) cleared, "
            f"{last.messages} message(s) blanked, {last.audio_files} audio file(s) deleted "
            f"(calls before {when_text(last.cutoff, tz)})"
        )
    lines = [head]
    going = retention.under_way(store.get_state(retention.PASS_KEY))  # its own counts: no scan of the calls
    if going is not None:
        lines.append(
            f"  pass under way since {when_text(going.started_at, tz)}: {going.calls} of ~{going.due} old call(s) "
            f"cleared (calls before {when_text(going.cutoff, tz)}), continuing"
        )
    return [*lines, f"  calls without personal data (retention or forget): {store.cleared_calls()}"]


FAILED_SHOWN = 20


def retry_events(store: Store, event_ids: list[str], now: int, out: Callable[[str], None]) -> bool:
    """Take set-aside events back: each is read again by today's rules and, when it is valid
    now (a fixed bug, a corrected value), recorded as a new call; False if any is not."""
    ok = True
    for event_id in event_ids:
        row = store.set_aside_event(event_id)
        if row is None:
            out(f"event {event_id}: not set aside (see `salesbot-poller status`)")
            ok = False
            continue
        if not row.raw_json:
            out(f"event {event_id}: too large to have been kept; it cannot be taken back")
            ok = False
            continue
        try:
            event = parse_event(json.loads(row.raw_json))
        except (ValueError, RecursionError) as exc:  # kept as served: may be cut, or nested too deep
            why = "nested too deep to read" if isinstance(exc, RecursionError) else str(exc)
            out(f"event {event_id}: still not a call event: {why}")
            ok = False
            continue
        call = store.readmit_event(event, now, event_id)
        out(f"event {event_id}: recorded as call {call.id} ({call.entity_type}/{call.entity_id})")
    return ok


def _failure_line(store: Store, call: Call, tz: tzinfo | None) -> str:
    what = "quarantined" if call.stage == Stage.QUARANTINED else "failed"
    return (
        f"call {call.id} ({call.entity_type}/{call.entity_id}), reached {store.resume_stage(call).value}, "
        f"{what} {when_text(call.updated_at, tz)} after {call.attempts} attempt(s): {call.last_error}"
    )


def retry(store: Store, call_ids: list[int], all_failed: bool, now: int, out: Callable[[str], None]) -> bool:
    """Put failed (or quarantined) calls back at the stage they reached; False if any id is
    unknown or not failed.

    A call resumes from its last stored artifact (`Store.resume_stage`): a transcription or
    analysis that succeeded is never paid for again. Attempts and the 24 h window restart.
    """
    ok = True
    calls: list[Call] = store.failed_calls(SET_ASIDE_STAGES)[::-1] if all_failed else []
    for call_id in call_ids:
        call = store.find_call(call_id)
        if call is None:
            out(f"call {call_id}: no such call (see `salesbot-poller status`)")
            ok = False
        elif call.stage not in SET_ASIDE_STAGES:
            out(f"call {call_id}: not failed (stage {call.stage}): nothing to retry")
            ok = False
        elif all(c.id != call.id for c in calls):
            calls.append(call)
    for call in calls:
        store.forget_unsent_render(call)
        stage = store.resume_stage(call)
        store.requeue(call, stage, now)
        out(f"call {call.id} ({call.entity_type}/{call.entity_id}): requeued at {stage.value}")
    if all_failed and not calls:
        out("no failed calls")
    return ok


def run(args: argparse.Namespace, config: Config | None) -> int:
    """`status`; `retry CALL_ID ... | --failed | --event EVENT_ID` (exit 1 when a call id or an
    event was not taken back). `retry`'s arguments are checked before its config is loaded."""
    if args.command == "retry":
        if not (args.call_ids or args.failed or args.event):
            err("retry: give CALL_ID(s), --failed or --event EVENT_ID")
            return EXIT_CONFIG
        config = load(args, require_secrets=False)
    assert config is not None  # `status`'s is loaded by `cli.main`
    store = Store.open(config.storage.database, int(utc_now().timestamp()))
    out = redacting_out(config)
    try:
        if args.command == "status":
            status(store, out, config)
            return EXIT_OK
        now = int(utc_now().timestamp())
        requeued = True
        if args.call_ids or args.failed:
            requeued = retry(store, args.call_ids, args.failed, now, out)
        readmitted = retry_events(store, args.event, now, out)
        return EXIT_OK if requeued and readmitted else EXIT_CHECK_FAILED
    finally:
        store.close()
