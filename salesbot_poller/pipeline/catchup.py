"""The first start is quiet: the missed calls found by the very first look-back are alerted in
ONE summary, not one by one, and their callback SLA counts from that start.

Contract:
- `mark_first_start(app, now)` (`intake.poll`, while the database has no cursor: the first
  poll, or one after a first poll that failed) stores the moment of that poll. A missed call
  that rang before it was found by the look-back (`poller.initial_lookback_minutes`), however
  late its note is read; a call that rang after it is alerted one by one as always.
- `summarise(app, cycle, due, patience)` (the intake pass, after the storm check, before the
  alerts): when at least `LEAST` of the look-back's calls are still waiting for their alert
  (stage `missed`), they become one summary to the alert chat (routing's `alert_destination`):
  "📵 3 пропущенных за последний час, не перезвонили:" and the numbers with their times and
  managers (`storm.listing`: shown like in an alert, `telegram.mask_phones`). It is said like
  a storm's (`storm.announce`): stored and the calls marked in one transaction (key
  `catchup:<first call id>-<last call id>`), then sent; one not sent yet goes out first thing
  in the next pass (`storm.SUMMARY_KINDS`). A dry run prints it and marks nothing. Returns the
  calls still to alert one by one. A single call gets its own alert: one message either way,
  and its own carries the client, the lead and the thread its follow-ups reply in.
  More than `telegram.max_alerts_per_cycle` at once is a storm (`storm`), said before this.
- `sla_start(call, first_start(app))`: when the callback SLA of a missed call starts (`followup`): its ring,
  or the first start for a call that rang before it, so no escalation comes seconds after the
  first start. A summarised call still gets its escalation and its callback reply, both as
  replies to the summary.
"""

from __future__ import annotations

import logging

from salesbot_poller.domain import Planned, Stage
from salesbot_poller.pipeline import storm
from salesbot_poller.pipeline.context import App, Cycle
from salesbot_poller.pipeline.messages import esc, pack
from salesbot_poller.pipeline.routing import alert_destination
from salesbot_poller.store import Call

log = logging.getLogger(__name__)

KIND = "catchup"
FIRST_START_KEY = "first_start_at"
LEAST = 2  # fewer: the call's own alert (see the module contract)


def mark_first_start(app: App, now: int) -> None:
    app.store.set_state(FIRST_START_KEY, str(now))


def first_start(app: App) -> int | None:
    """The moment of the first poll of this database (None before it, or for a database that
    polled before this was recorded: its look-back is long alerted)."""
    raw = app.store.get_state(FIRST_START_KEY)
    return int(raw) if raw and raw.isdigit() else None


def sla_start(call: Call, start: int | None) -> int:
    """When `call`'s callback SLA starts, the first start being `start` (`first_start`)."""
    return call.event_created_at if start is None else max(call.event_created_at, start)


def summarised(call: Call) -> bool:
    """Whether `call` was alerted in the first start's summary."""
    return (call.summarised_in or "").startswith(f"{KIND}:")


def _span(minutes: int) -> str:
    if minutes == 60:
        return "за последний час"
    if minutes % 60 == 0:
        return f"за последние {minutes // 60} ч"
    return f"за последние {minutes} мин"


def render(app: App, calls: list[Call]) -> list[str]:
    count = len(calls)
    what = "пропущенный" if count % 10 == 1 and count % 100 != 11 else "пропущенных"
    span = _span(app.config.poller.initial_lookback_minutes)
    return pack([f"📵 <b>{count} {what} {esc(span)}</b>, не перезвонили:\n{storm.listing(calls, app)}"])


def plan(app: App, calls: list[Call]) -> Planned:
    """The summary of `calls` as a delivery to the alert chat."""
    key = f"{KIND}:{calls[0].id}-{calls[-1].id}"
    return Planned(key, KIND, alert_destination(app.config), {"parts": render(app, calls)})


def summarise(app: App, cycle: Cycle, due: list[Call], patience: float) -> list[Call]:
    """See the module contract."""
    start = first_start(app)
    if start is None:
        return due
    found = [call for call in due if call.stage == Stage.MISSED.value and call.event_created_at < start]
    if len(found) < LEAST:
        return due
    item = plan(app, found)
    marked = storm.announce(app, cycle, item, found, patience)
    if app.dry_run is None:
        log.info("first start: %d missed call(s) found by the look-back in one summary (%s)", marked, item.key)
    ids = {call.id for call in found}
    return [call for call in due if call.id not in ids]
