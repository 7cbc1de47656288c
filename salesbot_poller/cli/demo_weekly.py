"""`salesbot-poller demo --weekly [--chart FILE]`: the weekly team report on demo data.

Contract: `run_weekly_demo(out, chart, clock)` starts the sandboxes on 127.0.0.1 (as `demo`
does), builds the app with the real composition root and a temporary database, stores
eight weeks of four managers' calls (`sandbox.team.demo_team`: deterministic for a given
day), and prints the report of the last full week as `report --week ... --dry-run` would,
its objections grouped by the OpenAI sandbox through the real client. With `chart`, the
chart's PNG is written there. Nothing is sent; no config, no network. Returns 0.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

from salesbot_poller.app import build_app
from salesbot_poller.cli.demo_cycle import AMO_TOKEN, BOT_TOKEN, CHAT_ID, OPENAI_KEY, demo_config
from salesbot_poller.cli.report import send_week_report
from salesbot_poller.config import parse_config
from salesbot_poller.domain import local_time
from salesbot_poller.reports.weekly import monday_of
from salesbot_poller.sandbox import SandboxAmoCRM, SandboxOpenAI, SandboxTelegram
from salesbot_poller.sandbox.team import MANAGERS, demo_team, store_calls

DEMO_ZONE = "Europe/Moscow"


def run_weekly_demo(
    out: Callable[[str], None], chart: Path | None = None, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> int:
    now = clock()
    moment = int(now.timestamp())
    out("SalesBot Poller demo: the weekly team report on eight weeks of demo calls of four managers")
    out("(a temporary database; the objections are grouped by the OpenAI sandbox on 127.0.0.1).")
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="salesbot-demo-")))
        amo = stack.enter_context(SandboxAmoCRM(AMO_TOKEN, moment))
        ai = stack.enter_context(SandboxOpenAI(OPENAI_KEY))
        tg = stack.enter_context(SandboxTelegram(BOT_TOKEN, CHAT_ID))
        raw = demo_config(tmp, amo, ai, tg)
        raw["amocrm"]["timezone"] = DEMO_ZONE
        raw["telegram"]["weekly_report"] = "mon 09:00"
        config = parse_config(raw, environ={})
        app = build_app(config, clock, dry_run=out)
        stack.callback(app.store.close)
        calls = demo_team(moment, app.tz)
        store_calls(app.store, calls, moment)
        monday = monday_of(local_time(moment, app.tz).date()) - timedelta(days=7)
        out(
            f"{len(calls)} calls of {', '.join(MANAGERS.values())} stored; the report of the week of {monday:%d.%m.%Y}:"
        )
        out("")
        send_week_report(app, monday, moment, out, chart)
    return 0
