"""Intake: read new call events into the store, then resolve each new call's note.

Contract:
- `poll` asks amoCRM for the window [cursor - overlap, now - settle], records every event
  (dedup by id) and the new cursor in one transaction. Malformed events are logged once,
  with the field, and kept in the seen-events table with their reason; an event that cannot
  be read at all comes as a malformed one named by a digest, its reason giving its position in
  the window (the client reads its page around it), so the cursor moves past it.
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
- `foresee` answers, for events not recorded yet (a backfill's window), what `resolve_new`
  would decide for each from its note, storing nothing.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import peewee

from salesbot_poller.domain import (
    MANAGER_UNKNOWN,
    CallEvent,
    CallNote,
    EntityDetails,
    Stage,
    answered,
    callback_number,
    says_missed,
)
from salesbot_poller.errors import FatalError, PermanentError, SalesbotError
from salesbot_poller.phones import key as phone_key
from salesbot_poller.pipeline import catchup, profiles
from salesbot_poller.pipeline.context import App, Cycle
from salesbot_poller.pipeline.health import describe
from salesbot_poller.pipeline.profiles import CallFacts
from salesbot_poller.services.amocrm_parse import as_raw
from salesbot_poller.store import Call

log = logging.getLogger(__name__)
T = TypeVar("T")

OVERLAP_SECONDS = 300  # consecutive windows overlap: event ordering and lag are undocumented
SETTLE_SECONDS = 5  # the window ends a little in the past, so it is complete when read


def poll(app: App, cycle: Cycle) -> None:
    """Record the events of the next window and advance the cursor past them."""
    cursor = app.store.cursor()
    until = cycle.now - SETTLE_SECONDS
    if cursor is None:  # a fresh database: what the look-back finds is summarised (`catchup`)
        since = cycle.now - app.config.poller.initial_lookback_minutes * 60
        catchup.mark_first_start(app, cycle.now)
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

    - A note that says the call was not answered (`domain.says_missed`: status "not reached"/
      "busy", or a duration of 0) makes an incoming call `Stage.MISSED` only when it has a
      number to call back (`domain.callback_number`): an alert without one asks the team for
      what nobody can do. Without one, and for an outgoing call, it is skipped.
    - A note with no duration that does not say "missed" (a note carrying only `params.text`,
      as SDK test data and some widgets write) is skipped, the reason naming what it lacks:
      nothing in it says the call was missed, nor how long it lasted.
    - `Stage.NEW` for an answered call whose recording link is not there yet.
    """
    if says_missed(note.duration, note.call_status):
        if direction != "in":
            return Stage.SKIPPED, "outgoing call not answered"
        if not callback_number(note.phone):  # fewer than 7 digits: shown, it is no one's number
            phone = f"is {note.phone[:40]!r}" if note.phone else "missing"
            return Stage.SKIPPED, f"missed call with no number to call back (params.phone {phone})"
        return Stage.MISSED, None
    if note.duration is None:
        return Stage.SKIPPED, f"the note has no {_lacking(note)}: nothing says the call was missed, nor how long it was"
    if note.duration < min_duration:
        return Stage.SKIPPED, f"too short ({note.duration} s < {min_duration} s)"
    if not note.link:
        return Stage.NEW, None
    return Stage.READY, None


def _lacking(note: CallNote) -> str:
    """The call fields a note has not, as amoCRM names them."""
    fields = {
        "params.duration": note.duration is None,
        "params.call_status": note.call_status is None,
        "params.phone": not note.phone,
        "params.link": not note.link,
    }
    return ", ".join(name for name, missing in fields.items() if missing)


def _manager_name(note: CallNote, users: dict[int, str]) -> str:
    if note.responsible_user_id and note.responsible_user_id in users:
        return users[note.responsible_user_id]
    responsible = note.call_responsible
    if responsible and responsible.isdigit():
        return users.get(int(responsible), f"пользователь {responsible}")
    if responsible:
        return responsible
    return f"пользователь {note.responsible_user_id}" if note.responsible_user_id else MANAGER_UNKNOWN


class NameLookups:
    """Names for the cards: best effort, and no more amoCRM requests after one failed."""

    def __init__(self) -> None:
        self.failed = False

    def lookup(self, lookup: Callable[[], dict[int, T]], what: str) -> dict[int, T]:
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


@dataclass(frozen=True)
class Foreseen:
    """What `resolve_new` would make of one event's call (see `foresee`)."""

    event: CallEvent
    note: CallNote | None  # None: missing or malformed, looked at again later
    stage: Stage | None  # READY or NEW: to transcribe; MISSED; SKIPPED; None without a note
    profile: str | None  # the `[[profiles]]` name it would be given


def foresee(app: App, events: Sequence[CallEvent]) -> list[Foreseen]:
    """What `resolve_new` would decide for the calls of `events`, without recording or storing
    anything: one `Foreseen` per event, grouped by entity type (the order of `events` within
    each type).

    Contract: the notes are read batched per entity type (`source.call_notes`), each call is
    classified (`classify`) and given its profile (`decide`, with the lead and the users' groups
    read once per entity type, only when a profile filters on them), exactly as `resolve_new`
    does. Where `resolve_new` would defer: a note missing or malformed gives `note=None,
    stage=None`; a profile that cannot be chosen because amoCRM did not answer leaves the stage
    the note gives, with no profile. amoCRM errors reading the notes propagate (nothing is
    deferred: there is no call yet); names for the cards are not read.
    """
    by_type: dict[str, list[CallEvent]] = defaultdict(list)
    for event in events:
        by_type[event.entity_type].append(event)
    result: list[Foreseen] = []
    for entity_type, group in by_type.items():
        notes = app.source.call_notes(entity_type, [e.note_id for e in group])
        classified: list[tuple[CallEvent, CallNote, Stage]] = []
        for event in group:
            note = notes.get(event.note_id)
            if not isinstance(note, CallNote):
                result.append(Foreseen(event, None, None, None))
                continue
            classified.append((event, note, classify(event.direction, note, 0)[0]))
        ids = [e.entity_id for e, _, stage in classified if stage != Stage.SKIPPED]
        known = profile_lookups(app, entity_type, ids, NameLookups())
        for event, note, stage in classified:
            profile = None
            if stage != Stage.SKIPPED:
                decided = decide(app, known, entity_type, event.entity_id, event.direction, note, stage)
                if decided is not None:
                    stage, _, profile = decided
            result.append(Foreseen(event, note, stage, profile))
    return result


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
    names = NameLookups()
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
        _resolve_type(app, cycle, entity_type, calls, notes, names)


def _resolve_type(
    app: App, cycle: Cycle, entity_type: str, calls: list[Call], notes: dict[int, CallNote | str], names: NameLookups
) -> None:
    """Classify the calls of one entity type from their notes, give each its profile (the lead
    and the users are read once for all of them, and only when a profile filters on them),
    then store each with the names its messages need."""
    resolved: list[tuple[Call, CallNote, Stage, str | None]] = []
    for call in calls:
        note = notes.get(call.note_id)
        if isinstance(note, CallNote):
            try:
                stage, reason = classify(call.direction, note, 0)
            except Exception as exc:  # a note our rules cannot read: this call only
                cycle.quarantine(call, f"classifying its note failed: {describe(exc)}")
                continue
            resolved.append((call, note, stage, reason))
            continue
        problem = note or "not found (deleted?)"
        cycle.defer(call, f"note {call.note_id} on {entity_type}/{call.entity_id}: {problem}")
    ids = [c.entity_id for c, _, stage, _ in resolved if stage != Stage.SKIPPED]
    known = profile_lookups(app, entity_type, ids, names)
    matched: list[tuple[Call, CallNote, Stage, str | None, str | None]] = []
    for call, note, stage, reason in resolved:
        if stage == Stage.SKIPPED:
            matched.append((call, note, stage, reason, None))
            continue
        decided = decide(app, known, entity_type, call.entity_id, call.direction, note, stage)
        if decided is None:  # a profile filters on what amoCRM did not tell this cycle: ask again
            cycle.defer(call, "the lead or the users could not be read to choose its profile")
            continue
        matched.append((call, note, *decided))
    details = known.details
    # A call still waiting for its link gets its names when the link is there.
    wanted = sorted({c.entity_id for c, _, stage, _, _ in matched if stage not in (Stage.SKIPPED, Stage.NEW)})
    entity_names = {i: d.name for i, d in details.items()}
    users: dict[int, str] = {}
    if wanted:
        missing = [i for i in wanted if i not in details]
        if missing:
            found = names.lookup(partial(app.source.entity_details, entity_type, missing), f"{entity_type} names")
            entity_names.update({i: d.name for i, d in found.items()})
        users = names.lookup(app.source.user_names, "user names")
    for call, note, stage, reason, profile_name in matched:
        try:
            _store_note(app, cycle, call, note, stage, reason, users, entity_names, profile_name)
        except (FatalError, peewee.OperationalError, peewee.InterfaceError):
            raise  # the database or the account, not this call
        except Exception as exc:  # confined to this call: the others are stored
            cycle.quarantine(call, f"storing its note failed: {describe(exc)}")


@dataclass
class Known:
    """What profile matching needs from amoCRM beyond the note, read once per entity type."""

    details: dict[int, EntityDetails]
    groups: dict[int, int | None]
    lead_facts: bool  # the profiles filter on the lead's pipeline or status
    group_facts: bool  # ... on the user's group
    failed: bool  # a lookup the profiles need failed this cycle


def profile_lookups(app: App, entity_type: str, entity_ids: list[int], names: NameLookups) -> Known:
    """The leads' pipeline and status, and the users' groups, when a profile filters on them:
    the lead request is the one that reads the names, so no request is added per call."""
    lead_facts = entity_type == "leads" and profiles.needs_lead(app.config)
    group_facts = profiles.needs_groups(app.config)
    ids = sorted(set(entity_ids))
    details = names.lookup(partial(app.source.entity_details, entity_type, ids), "leads") if lead_facts and ids else {}
    groups = names.lookup(app.source.user_groups, "users") if group_facts and ids else {}
    return Known(details, groups, lead_facts, group_facts, names.failed)


def decide(
    app: App, known: Known, entity_type: str, entity_id: int, direction: str, note: CallNote, stage: Stage
) -> tuple[Stage, str | None, str | None] | None:
    """The call's stage, skip reason and profile name (`profiles.match`); None when a fact a
    profile needs could not be read (the call is looked at again later)."""
    lead = known.details.get(entity_id)
    if known.failed and (known.lead_facts or known.group_facts):
        return None  # a lead that amoCRM no longer has is read fine: it matches no pipeline
    facts = _facts(entity_type, direction, note, lead, known.groups)
    profile, why = profiles.match(app.config, facts)
    if profile is None:
        return Stage.SKIPPED, why, None
    return stage, None, profile.name


def _facts(
    entity_type: str, direction: str, note: CallNote, lead: EntityDetails | None, groups: dict[int, int | None]
) -> CallFacts:
    user = note.responsible_user_id
    return CallFacts(
        entity_type=entity_type,
        direction=direction,
        duration=note.duration or 0,
        answered=answered(note.duration, note.call_status),
        phone=note.phone,
        source=note.source,
        user_id=user,
        group_id=groups.get(user) if user is not None else None,
        pipeline_id=lead.pipeline_id if lead else None,
        status_id=lead.status_id if lead else None,
    )


def _store_note(
    app: App,
    cycle: Cycle,
    call: Call,
    note: CallNote,
    stage: Stage,
    reason: str | None,
    users: dict[int, str],
    names: dict[int, str],
    profile: str | None = None,
) -> None:
    facts = {
        "duration": note.duration,
        "phone": note.phone,
        "phone_key": phone_key(note.phone) if note.phone is not None else None,  # `/find`, `forget` look it up
        "link": note.link,
        "call_status": note.call_status,
        "source": note.source,
        "responsible_user_id": note.responsible_user_id,
        "manager_name": _manager_name(note, users),
        "entity_name": names.get(call.entity_id),
        "profile": profile,
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
    if stage == Stage.READY:
        app.work_ready.ring()  # stored (committed): an idle worker takes it now, not at its next look
    if stage == Stage.SKIPPED:
        cycle.skipped += 1
        log.info("call %d (%s/%d): skipped: %s", call.id, call.entity_type, call.entity_id, reason)
