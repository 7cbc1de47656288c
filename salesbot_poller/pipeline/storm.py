"""A storm of missed calls: one summary message instead of an alert per call.

Contract of `summarise(app, cycle, due, patience)` (the intake pass, before its alerts):
- First, a summary stored earlier and not sent yet (a Telegram failure, a crash) is sent: a
  storm's or the first start's (`catchup`, which says its calls with `announce` too).
- `due` are the missed calls whose alert is due this pass, oldest first. Those still waiting
  for their alert to be rendered (stage `missed`) are counted; when there are more than
  `telegram.max_alerts_per_cycle`, ALL of them become one summary, and none gets an alert of
  its own: so many at once means something is wrong (a telephony outage replaying its queue,
  a spam attack), and a flood of single alerts would bury the summary that says so.
- The summary goes to the alert chat (`telegram.alert_chat_id`, default `telegram.chat_id`:
  routing's `alert_destination`): the count, the time span, the first `SHOWN` numbers with
  their times and managers (cut and escaped), and that no per-call escalation follows. The
  numbers are shown like in an alert: in full unless `telegram.mask_phones` is "all" (the
  calls still need calling back; `messages.masked`).
- Exactly once: the summary (key `storm:<first call id>-<last call id>`) is stored and the
  calls are marked `missed_alerted` with `summarised_in` = that key in ONE transaction
  (`Store.summarise`, by `announce`), then it is sent like every message (`delivery`). Nothing leaves the
  database: the calls stay for `status`, the digest and the callback count.
- Follow-ups (`followup`) send no escalation and no callback reply for a summarised call (it
  has no alert of its own to reply to, and thousands of escalations would be the same flood
  an SLA later); a callback to it is still recorded, so the digest counts it returned.
- Returns the calls still to alert one by one: all of `due` without a storm; else those
  already rendered (stage `notifying`: their own alert is stored, maybe partly sent).
- A dry run prints the summary and marks nothing. A Telegram failure leaves the summary for
  the next pass; a fatal one propagates.
"""

from __future__ import annotations

import logging

from salesbot_poller.domain import MANAGER_UNKNOWN, Planned, Stage
from salesbot_poller.pipeline import delivery
from salesbot_poller.pipeline.context import App, Cycle
from salesbot_poller.pipeline.messages import format_time, masked, name_html, pack, phone_html
from salesbot_poller.pipeline.routing import alert_destination
from salesbot_poller.store import Call

log = logging.getLogger(__name__)

KIND = "storm"
# Every summary of missed calls: a storm's and the first start's (`catchup`); one stored and
# not sent yet (a Telegram failure, a crash) is sent first thing by the next pass.
SUMMARY_KINDS = (KIND, "catchup")
SHOWN = 20  # numbers listed in the summary; the rest are counted


def listing(calls: list[Call], app: App) -> str:
    """The numbers of `calls`, one line each with its time and manager, the first `SHOWN` (the
    rest counted); shown like in an alert: in full unless `telegram.mask_phones` is "all"."""
    hide = masked(app.config.telegram.mask_phones, alert=True)
    shown = [
        f"☎️ {phone_html(call.phone or '', 'номер не определён', hide)} · {format_time(call.event_created_at, app.tz)}"
        f" · {name_html(call.manager_name or MANAGER_UNKNOWN)}"
        for call in calls[:SHOWN]
    ]
    if len(calls) > SHOWN:
        shown.append(f"… и ещё {len(calls) - SHOWN}")
    return "\n".join(shown)


def render_storm(calls: list[Call], limit: int, app: App) -> list[str]:
    """The summary of `calls` (in the order they were recorded), more than `limit` in one pass."""
    times = [call.event_created_at for call in calls]
    first, last = min(times), max(times)  # ids follow the order calls were read, not when they rang
    lines = [
        f"🚨 <b>Шквал пропущенных звонков: {len(calls)}</b> · {format_time(first, app.tz)} – "
        f"{format_time(last, app.tz)}",
        f"Больше {limit} за раз: возможен сбой телефонии или спам. Отдельных оповещений и "
        "напоминаний «не перезвонили» по ним не будет; все звонки сохранены.",
    ]
    return pack(["\n".join(lines), listing(calls, app)])


def plan(app: App, calls: list[Call]) -> Planned:
    """The summary of `calls` as a delivery to the alert chat."""
    parts = render_storm(calls, app.config.telegram.max_alerts_per_cycle, app)
    key = f"storm:{calls[0].id}-{calls[-1].id}"
    return Planned(key, KIND, alert_destination(app.config), {"parts": parts})


def announce(app: App, cycle: Cycle, item: Planned, calls: list[Call], patience: float) -> int:
    """Say summary `item` in place of the alerts of `calls` (stage `missed`), exactly once: store
    it and mark the calls alerted by it in ONE transaction (`Store.summarise`), then send it
    (`delivery`; what fails is sent by the next pass, see `summarise`). A dry run prints it and
    marks nothing. Returns how many calls were marked."""
    if app.dry_run is not None:
        app.dry_run.show([item])
        return 0
    marked = app.store.summarise([item], calls, cycle.now)
    delivery.send_pending(app, cycle.now, SUMMARY_KINDS, urgent=True, patience=patience)
    return marked


def summarise(app: App, cycle: Cycle, due: list[Call], patience: float) -> list[Call]:
    """See the module contract."""
    if app.dry_run is None:
        delivery.send_pending(app, cycle.now, SUMMARY_KINDS, urgent=True, patience=patience)
    fresh = [call for call in due if call.stage == Stage.MISSED.value]
    limit = app.config.telegram.max_alerts_per_cycle
    if len(fresh) <= limit:
        return due
    item = plan(app, fresh)
    marked = announce(app, cycle, item, fresh, patience)
    if app.dry_run is None:
        log.warning(
            "%d missed calls due at once (more than telegram.max_alerts_per_cycle = %d): one summary (%s), "
            "%d calls marked",
            len(fresh),
            limit,
            item.key,
            marked,
        )
    return [call for call in due if call.stage != Stage.MISSED.value]
