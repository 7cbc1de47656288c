"""The alert chat hears, once a day, that the daily OpenAI budget holds calls back.

Contract of `run(app, cycle)` (once per intake pass):
- Due when `openai.daily_budget_usd` > 0, today's estimated spend (UTC day, `usage`) is at or
  over it, and answered calls wait before transcription (stage ready/downloaded, next attempt
  later than now: `BudgetGate.hold` put them off until the next UTC day).
- One message to the alert chat (`telegram.alert_chat_id`, else `telegram.chat_id`; see
  `routing.alert_destination`): what was spent, how many calls wait, and the key that raises
  the budget. Key `budget:<UTC date>`, stored before sending (`delivery`), so it is sent once
  that day however many passes and restarts come; an unsent one is sent on the next pass.
- In a dry run it is printed instead (once per process), and nothing is recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime

from salesbot_poller.domain import Planned, Stage
from salesbot_poller.pipeline import usage
from salesbot_poller.pipeline.context import App, Cycle
from salesbot_poller.pipeline.followup import send_pending
from salesbot_poller.pipeline.messages import format_time
from salesbot_poller.pipeline.routing import alert_destination

KIND = "budget"
WAITING_STAGES = (Stage.READY, Stage.DOWNLOADED)


def render_notice(spent: float, budget: float, waiting: int, resume: str) -> str:
    """The message (Telegram HTML; every value in it is a number or a time); `resume` is
    when the budget's day ends, in the messages' time zone."""
    return (
        "💸 <b>Дневной бюджет OpenAI исчерпан</b>\n"
        f"Потрачено сегодня (UTC): ~${spent:.2f} из ${budget:.2f}.\n"
        f"Звонков ждут расшифровки: {waiting}; они продолжатся {resume}.\n"
        "Поднять бюджет: <code>openai.daily_budget_usd</code> в конфиге (0 — без бюджета)."
    )


def run(app: App, cycle: Cycle) -> None:
    """See the module contract."""
    prices = app.config.openai
    if prices.daily_budget_usd <= 0:
        return
    today = usage.day_start(cycle.now)
    key = f"budget:{datetime.fromtimestamp(today, UTC).date().isoformat()}"
    if app.dry_run is None and app.store.find_delivery(key) is not None:
        send_pending(app, cycle, (KIND,))  # told already, or to be told again if unsent
        return
    spent = usage.estimate_usd(usage.totals_since(app.store, today), prices)
    if spent < prices.daily_budget_usd:
        return
    waiting = app.store.count_put_off(cycle.now, WAITING_STAGES)
    if not waiting:
        return
    item = Planned(
        key,
        KIND,
        alert_destination(app.config),
        {"parts": [render_notice(spent, prices.daily_budget_usd, waiting, format_time(today + 86400, app.tz))]},
    )
    if app.dry_run is not None:
        app.dry_run.show([item])
        return
    app.store.enqueue([item], None, cycle.now)
    send_pending(app, cycle, (KIND,))
