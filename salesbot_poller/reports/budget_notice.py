"""The alert chat hears, once a day, that the daily OpenAI budget holds calls back.

Contract of `run(app, cycle)` (once per intake pass):
- Due when `openai.daily_budget_usd` > 0, the budget holds transcriptions back today
  (`usage.budget_spent`: today's estimate plus the uploads in flight reached it, or a call's
  next upload did not fit in what was left, UTC day), and answered calls wait before or in
  the middle of their transcription (stage ready/downloaded, next attempt later than now:
  `BudgetGate` put them off until the next UTC day). A call stopped half way is one of them.
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
from salesbot_poller.pipeline.delivery import send_scheduled
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
    key = f"{KIND}:{datetime.fromtimestamp(today, UTC).date().isoformat()}"

    def plan() -> list[Planned]:
        spent = usage.budget_used(app.store, prices, cycle.now)
        held_back = usage.budget_spent(app.store, prices, cycle.now)
        waiting = app.store.count_put_off(cycle.now, WAITING_STAGES) if held_back else 0
        if not waiting:
            return []  # under the budget, or nobody waits: nothing to say (yet)
        notice = render_notice(spent, prices.daily_budget_usd, waiting, format_time(today + 86400, app.tz))
        return [Planned(key, KIND, alert_destination(app.config), {"parts": [notice]})]

    send_scheduled(app, cycle, key, KIND, plan)
