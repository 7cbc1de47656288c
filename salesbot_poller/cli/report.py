"""`salesbot-poller report --week 2026-11-23 [--dry-run] [--chart FILE]`: the weekly report of
any past week, on demand.

Contract:
- `parse_week(text, today)`: the Monday of the week holding the date `text` (YYYY-MM-DD, any
  day of that week); ValueError naming the value when it is not a date, or when that week is
  not over by `today` (local).
- `send_week_report(app, monday, now, out, chart)`: builds the report (`weekly.plan_week`; the
  objection grouping is one chat request, recorded as usage) and sends it to the alert chat
  like the scheduled one, under its own key (`weekly:<monday>:manual:<now>`), so asking
  again sends it again. With `app.dry_run` it is printed instead and nothing is stored. With
  `chart`, the chart's PNG is also written to that file. Returns True when everything was
  sent (or printed); a part Telegram did not take is closed with its error (never sent later
  by the service) and False is returned.
"""

from __future__ import annotations

import argparse
import base64
import logging
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

from salesbot_poller.app import account_zone, build_app
from salesbot_poller.cli.common import EXIT_CHECK_FAILED, EXIT_CONFIG, EXIT_OK, err, redacting_out, utc_now
from salesbot_poller.config import Config
from salesbot_poller.domain import local_time
from salesbot_poller.errors import SalesbotError
from salesbot_poller.pipeline import delivery
from salesbot_poller.pipeline.context import App
from salesbot_poller.reports import weekly
from salesbot_poller.store import Store

log = logging.getLogger(__name__)

REPORT_PATIENCE = 60.0  # seconds a part may wait for its chat's slot


def parse_week(text: str, today: date) -> date:
    """See the module contract."""
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD, e.g. 2026-11-23)") from None
    monday = weekly.monday_of(day)
    if monday + timedelta(days=7) > today:
        raise ValueError(f"the week of {monday.isoformat()} is not over yet (it ends on Sunday)")
    return monday


def send_week_report(app: App, monday: date, now: int, out: Callable[[str], None], chart: Path | None = None) -> bool:
    """See the module contract."""
    key = f"weekly:{monday.isoformat()}:manual:{now}"
    items = weekly.plan_week(app, monday, now, key)
    if chart is not None:
        chart.write_bytes(base64.b64decode(items[1].payload["photo"]))
        out(f"chart written to {chart}")
    if app.dry_run is not None:
        app.dry_run.show(items)
        return True
    app.store.enqueue(items, None, now)
    rows = [row for item in items if (row := app.store.find_delivery(item.key)) is not None]
    try:
        delivery.send_all(app, rows, now, patience=REPORT_PATIENCE)
    except SalesbotError as exc:
        for row in app.store.pending(kinds=(weekly.KIND,)):
            if row.key.startswith(key):
                app.store.update_delivery(row, done_at=now, error=f"not sent: {exc}")
        out(f"report: not sent: {exc}")
        return False
    out(f"report of the week {monday:%d.%m.%Y} sent ({len(items[0].payload['parts'])} message(s) and the chart)")
    return True


def run(args: argparse.Namespace, config: Config | None) -> int:
    """`report --week DATE [--dry-run] [--chart FILE]`: the week is read in `amocrm.timezone`.
    Exit 1 when the report was not sent."""
    assert config is not None  # loaded by `cli.main`
    now = int(utc_now().timestamp())
    try:
        monday = parse_week(args.week, local_time(now, account_zone(config)).date())
    except ValueError as exc:
        err(f"report --week: {exc}")
        return EXIT_CONFIG
    out = redacting_out(config, flush=True)
    store = Store.open(config.storage.database, now)
    try:
        app = build_app(config, utc_now, store, dry_run=out if args.dry_run else None)
        sent = send_week_report(app, monday, now, out, Path(args.chart) if args.chart else None)
    finally:
        store.close()
    return EXIT_OK if sent else EXIT_CHECK_FAILED
