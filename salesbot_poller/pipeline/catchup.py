"""The first start is quiet: the missed calls the very first look-back found are alerted in ONE
summary, not one by one.

Contract:
- `mark_first_start(app, now)` (the first poll of a fresh database, `intake.poll`): stores the
  moment of that poll. Every missed call that rang before it was found by the look-back
  (`poller.initial_lookback_minutes`), however late its note is resolved.
- `summarise(app, cycle, due)` (the intake pass, before the storm check and the alerts): the
  look-back's missed calls still waiting for their alert (stage `missed`) become one summary
  to the alert chat: "3 пропущенных за последний час, не перезвонили: +7 916 123-45-67, …"
  (numbers as in an alert: `messages.masked`), stored and marked in one transaction
  (`Store.summarise`, key `catchup:<first id>-<last id>`), then sent (`delivery`). Returns the
  calls still to alert one by one. A dry run prints it and marks nothing.
- `sla_start(app, call)`: when the callback SLA of a missed call starts: its ring, or the first
  start for a call the look-back found (`followup`), so no escalation comes seconds after the
  summary. A call summarised here still gets its escalation after the SLA and its callback
  reply, both to the alert chat, the reply answering the summary.
"""

from __future__ import annotations

import logging

from salesbot_poller.domain import Planned, Stage
from salesbot_poller.pipeline import delivery
from salesbot_poller.pipeline.context import App, Cycle
from salesbot_poller.pipeline.messages import esc, masked, pack, phone_html
from salesbot_poller.pipeline.routing import alert_destination
from salesbot_poller.store import Call

log = logging.getLogger(__name__)

KIND = "catchup"
FIRST_START_KEY = "first_start_at"
SHOWN = 20  # numbers listed; the rest are counted


def mark_first_start(app: App, now: int) -> None:
    app.store.set_state(FIRST_START_KEY, str(now))


def first_start(app: App) -> int | None:
    raw = app.store.get_state(FIRST_START_KEY)
    return int(raw) if raw and raw.isdigit() else None


def found_at_start(app: App, call: Call) -> bool:
    start = first_start(app)
    return start is not None and call.event_created_at < start


def sla_start(app: App, call: Call) -> int:
    start = first_start(app)
    return max(call.event_created_at, start) if start is not None else call.event_created_at


def _span(minutes: int) -> str:
    if minutes == 60:
        return "за последний час"
    if minutes % 60 == 0:
        return f"за последние {minutes // 60} ч"
    return f"за последние {minutes} мин"


def render(app: App, calls: list[Call]) -> list[str]:
    hide = masked(app.config.telegram.mask_phones, alert=True)
    count = len(calls)
    what = "пропущенный" if count % 10 == 1 and count % 100 != 11 else "пропущенных"
    numbers = [phone_html(call.phone or "", "номер не определён", hide) for call in calls[:SHOWN]]
    if count > SHOWN:
        numbers.append(f"… и ещё {count - SHOWN}")
    head = f"📵 <b>{count} {what} {esc(_span(app.config.poller.initial_lookback_minutes))}</b>, не перезвонили: "
    return pack([head + ", ".join(numbers)])


def summarise(app: App, cycle: Cycle, due: list[Call], patience: float) -> list[Call]:
    """See the module contract."""
    start = first_start(app)
    if start is None:
        return due
    if app.dry_run is None:  # one stored earlier and not sent yet (a Telegram failure, a crash)
        delivery.send_pending(app, cycle.now, (KIND,), urgent=True, patience=patience)
    found = [call for call in due if call.stage == Stage.MISSED.value and call.event_created_at < start]
    if not found:
        return due
    key = f"{KIND}:{found[0].id}-{found[-1].id}"
    item = Planned(key, KIND, alert_destination(app.config), {"parts": render(app, found)})
    rest = [call for call in due if call.id not in {c.id for c in found}]
    if app.dry_run is not None:
        app.dry_run.show([item])
        return rest
    marked = app.store.summarise([item], found, cycle.now)
    log.info("first start: %d missed call(s) of the look-back in one summary (%s)", marked, key)
    delivery.send_pending(app, cycle.now, (KIND,), urgent=True, patience=patience)
    return rest
