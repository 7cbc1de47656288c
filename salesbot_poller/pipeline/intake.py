"""Intake: read new call events into the store, then resolve each new call's note.

Contract:
- `poll` asks amoCRM for the window [cursor - overlap, now - settle], records every event
  (dedup by id) and the new cursor in one transaction. Malformed events are logged once,
  with the field, and kept in the seen-events table with their reason.
- `resolve_new` reads the notes of due `new` calls, batched per entity type (by note id,
  up to 250 a request), classifies each call and stores the note's facts and the names the
  messages need (batched by id too). A note that is missing, malformed, or has no recording
  link yet is looked at again on a later cycle (backoff), not dropped.
- Once amoCRM has failed in a cycle (the poll, or a notes request, after the client's own
  bounded retries), no further amoCRM request is made in that cycle: the due calls wait,
  untouched, for the next one. A `FatalError` propagates and no call is marked anything.
- An unexpected error while classifying or storing one call's note is confined to that call:
  it is quarantined with its reason (`Cycle.quarantine`); an event that cannot be stored is
  set aside with its reason (`Store.record_window`). Database errors propagate.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from functools import partial

import peewee

from salesbot_poller.domain import MANAGER_UNKNOWN, CallNote, Stage, answered
from salesbot_poller.errors import FatalError, PermanentError, SalesbotError
from salesbot_poller.pipeline.context import App, Cycle
from salesbot_poller.pipeline.health import describe
from salesbot_poller.services.amocrm_parse import as_raw
from salesbot_poller.store import Call

log = logging.getLogger(__name__)

OVERLAP_SECONDS = 300  # consecutive windows overlap: event ordering and lag are undocumented
SETTLE_SECONDS = 5  # the window ends a little in the past, so it is complete when read


def poll(app: App, cycle: Cycle) -> None:
    """Record the events of the next window and advance the cursor past them."""
    cursor = app.store.cursor()
    until = cycle.now - SETTLE_SECONDS
    if cursor is None:
        since = cycle.now - app.config.poller.initial_lookback_minutes * 60
    else:
        since, until = cursor - OVERLAP_SECONDS, max(until, cursor)
    batch = app.source.call_events(since, until)
    cycle.events = len(batch.events)
    new_calls, new_malformed = app.store.record_window(batch.events, batch.malformed, until, cycle.now, as_raw)
    cycle.new = new_calls
    for event_id, reason in new_malformed:
        log.warning("amoCRM event %s ignored: %s", event_id, reason)


def classify(direction: str, note: CallNote, min_duration: int) -> tuple[Stage, str | None]:
    """The next stage of a call from its note, and the reason when it is skipped.

    Returns `Stage.NEW` for an answered call whose recording link is not there yet.
    """
    not_answered = not answered(note.duration, note.call_status)
    if not_answered and direction == "in":
        return Stage.MISSED, None
    if not_answered:
        return Stage.SKIPPED, "outgoing call not answered"
    if note.duration < min_duration:
        return Stage.SKIPPED, f"too short ({note.duration} s < {min_duration} s)"
    if not note.link:
        return Stage.NEW, None
    return Stage.READY, None


def _manager_name(note: CallNote, users: dict[int, str]) -> str:
    if note.responsible_user_id and note.responsible_user_id in users:
        return users[note.responsible_user_id]
    responsible = note.call_responsible
    if responsible and responsible.isdigit():
        return users.get(int(responsible), f"пользователь {responsible}")
    if responsible:
        return responsible
    return f"пользователь {note.responsible_user_id}" if note.responsible_user_id else MANAGER_UNKNOWN


class _Names:
    """Names for the cards: best effort, and no more amoCRM requests after one failed."""

    def __init__(self) -> None:
        self.failed = False

    def lookup(self, lookup: Callable[[], dict[int, str]], what: str) -> dict[int, str]:
        if self.failed:
            return {}
        try:
            return lookup()
        except FatalError:
            raise
        except SalesbotError as exc:  # names make the cards readable: not worth holding a call
            self.failed = True
            log.warning("amoCRM %s unavailable (%s): cards show ids", what, exc)
            return {}


def resolve_new(app: App, cycle: Cycle) -> None:
    """Read and classify the notes of due new calls, batched per entity type."""
    due = app.store.due_calls(cycle.now, [Stage.NEW])
    if not due:
        return
    if cycle.poll_error is not None:
        log.info("%d call(s) wait for the next cycle: amoCRM failed this one", len(due))
        return
    by_type: dict[str, list[Call]] = defaultdict(list)
    for call in due:
        by_type[call.entity_type].append(call)
    names = _Names()
    for entity_type, calls in by_type.items():
        try:
            notes = app.source.call_notes(entity_type, [c.note_id for c in calls])
        except FatalError:
            raise
        except PermanentError as exc:  # this entity type only (a 404: switched off)
            for call in calls:
                cycle.defer(call, f"reading its note: {exc}", exc)
            continue
        except SalesbotError as exc:  # amoCRM is failing: the other types wait too, untouched
            for call in calls:
                cycle.defer(call, f"reading its note: {exc}", exc)
            return
        resolved: list[tuple[Call, CallNote, Stage, str | None]] = []
        for call in calls:
            note = notes.get(call.note_id)
            if isinstance(note, CallNote):
                try:
                    stage, reason = classify(call.direction, note, app.config.poller.min_duration_seconds)
                except Exception as exc:  # a note our rules cannot read: this call only
                    cycle.quarantine(call, f"classifying its note failed: {describe(exc)}")
                    continue
                resolved.append((call, note, stage, reason))
                continue
            problem = note or "not found (deleted?)"
            cycle.defer(call, f"note {call.note_id} on {entity_type}/{call.entity_id}: {problem}")
        # A call still waiting for its link gets its names when the link is there.
        wanted = sorted({c.entity_id for c, _, stage, _ in resolved if stage not in (Stage.SKIPPED, Stage.NEW)})
        entity_names: dict[int, str] = {}
        users: dict[int, str] = {}
        if wanted:
            entity_names = names.lookup(partial(app.source.entity_names, entity_type, wanted), f"{entity_type} names")
            users = names.lookup(app.source.user_names, "user names")
        for call, note, stage, reason in resolved:
            try:
                _store_note(app, cycle, call, note, stage, reason, users, entity_names)
            except (FatalError, peewee.OperationalError, peewee.InterfaceError):
                raise  # the database or the account, not this call
            except Exception as exc:  # confined to this call: the others are stored
                cycle.quarantine(call, f"storing its note failed: {describe(exc)}")


def _store_note(
    app: App,
    cycle: Cycle,
    call: Call,
    note: CallNote,
    stage: Stage,
    reason: str | None,
    users: dict[int, str],
    names: dict[int, str],
) -> None:
    facts = {
        "duration": note.duration,
        "phone": note.phone,
        "link": note.link,
        "call_status": note.call_status,
        "source": note.source,
        "responsible_user_id": note.responsible_user_id,
        "manager_name": _manager_name(note, users),
        "entity_name": names.get(call.entity_id),
    }
    if stage == Stage.NEW:
        app.store.update(call, cycle.now, **facts)
        cycle.defer(call, "answered call has no recording link yet", waiting_for_link=True)
        return
    kind = "missed" if stage == Stage.MISSED else "conversation"
    app.store.update(
        call,
        cycle.now,
        **facts,
        stage=stage,
        kind=kind,
        skip_reason=reason,
        attempts=0,
        next_attempt_at=cycle.now,
        last_error=None,
    )
    if stage == Stage.SKIPPED:
        cycle.skipped += 1
        log.info("call %d (%s/%d): skipped: %s", call.id, call.entity_type, call.entity_id, reason)
