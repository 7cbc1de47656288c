"""Missed-call follow-up: an escalation when nobody calls back in time, a reply when someone does.

Contract of `run(app, cycle)` (once per cycle, after the calls are processed):
- Looked at: missed incoming calls of the last 24 h whose alert Telegram accepted and that
  are not known to be returned yet.
- A missed call is returned by the first later outgoing call to the same number (`phones.key`:
  the same number however amoCRM wrote it; an internal line, shorter, never) that was
  answered (duration > 0, status not "not reached"/"busy"). Then, once: a reply to the alert
  saying when and by whom (`callback_call_id` and the reply's delivery row are committed
  together, before sending).
- If no such call came within `poller.missed_call_sla_minutes` of the missed call (of the first
  start for a call that rang before it: `catchup.sla_start`), once: an
  escalation to the alert chat (`telegram.alert_chat_id`), or, without one, as a reply to the
  alert in its chat. Never for a call with no number to call back: nothing to ask for.
- Numbers follow `telegram.mask_phones` like the alert's (`messages.masked`): the escalation
  asks for a callback, so it shows the number in full unless "all"; the reply names no number.
- A call alerted only in a storm summary (`storm`) gets neither message; its callback is
  still recorded (the digest counts it returned). A call of the first start's summary
  (`catchup`) gets both, as replies to that summary in the alert chat.
- Every message goes through `delivery` (stored, then sent, each acceptance recorded). A
  Telegram failure leaves the row for the next cycle; a fatal one propagates. In a dry run
  the messages are printed, and nothing is recorded.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from salesbot_poller.domain import MANAGER_UNKNOWN, Destination, Planned, answered, callback_number
from salesbot_poller.phones import is_full, key
from salesbot_poller.pipeline import catchup, delivery
from salesbot_poller.pipeline.context import App, Cycle, call_context
from salesbot_poller.pipeline.messages import render_callback, render_escalation
from salesbot_poller.pipeline.routing import alert_destination
from salesbot_poller.store import Call

log = logging.getLogger(__name__)

WINDOW_SECONDS = 24 * 3600
FOLLOW_UP_KINDS = ("escalation", "callback")


def _alert_chat(call: Call) -> Destination | None:
    return Destination(call.chat_id, call.thread_id) if call.chat_id else None


def plan(app: App, call: Call, callback: Call | None, now: int, start: int | None = None) -> list[Planned]:
    """What to send about missed `call` now (nothing once it was said); `start`: the first
    start (`catchup.first_start`)."""
    caught_up = catchup.summarised(call)
    if call.summarised_in and not caught_up:  # alerted in a storm summary: no reply or escalation (`storm`)
        return []
    own = f"call:{call.id}"
    # A call of the first start's summary has no alert of its own: its messages answer the summary.
    chat, answered_key = (alert_destination(app.config), call.summarised_in) if caught_up else (_alert_chat(call), own)
    if callback is not None:
        parts = render_callback(
            callback.manager_name or MANAGER_UNKNOWN, callback.event_created_at, call.event_created_at, app.tz
        )
        return [Planned(f"{own}:callback", "callback", chat, {"parts": parts}, answered_key)]
    if not callback_number(call.phone):  # no number to call back (alerted before intake required one)
        return []
    sla = app.config.poller.missed_call_sla_minutes
    if now < catchup.sla_start(call, start) + sla * 60:  # a call the look-back found: from the first start
        return []
    parts = render_escalation(call_context(app, call), sla, app.tz, app.config.telegram.mask_phones)
    if app.config.telegram.alert_chat_id and not caught_up:
        return [Planned(f"{own}:escalation", "escalation", alert_destination(app.config), {"parts": parts})]
    return [Planned(f"{own}:escalation", "escalation", chat, {"parts": parts}, answered_key)]


def _callbacks(app: App, since: int) -> dict[str, list[Call]]:
    """Answered outgoing calls since `since`, by number, oldest first."""
    found: dict[str, list[Call]] = defaultdict(list)
    for call in app.store.outgoing_since(since):
        if answered(call.duration, call.call_status) and is_full(number := key(call.phone)):
            found[number].append(call)
    return found


def run(app: App, cycle: Cycle) -> None:
    """See the module contract."""
    now = cycle.now
    since = now - WINDOW_SECONDS
    missed = app.store.alerted_unreturned(since)
    callbacks = _callbacks(app, since) if missed else {}
    start = catchup.first_start(app) if missed else None
    # Escalations stored already are not planned again: a busy day's missed calls are not
    # re-rendered every pass (66 ms a pass with 137 of them), only checked by key.
    escalated = app.store.stored_keys([f"call:{call.id}:escalation" for call in missed])
    for call in missed:
        later = [c for c in callbacks.get(key(call.phone), []) if c.event_created_at >= call.event_created_at]
        callback = later[0] if later else None
        if callback is None and f"call:{call.id}:escalation" in escalated:
            continue
        items = plan(app, call, callback, now, start)
        if not items and callback is None:  # nothing due yet (or a summarised call): no transaction
            continue
        if app.dry_run is not None:
            app.dry_run.show(items)
            continue
        with app.store.db.atomic():
            if callback is not None:
                app.store.update(call, now, callback_call_id=callback.id)
            app.store.enqueue(items, call.id, now)
    if app.dry_run is None:
        delivery.send_pending(app, now, FOLLOW_UP_KINDS)
