"""Measure the weekly report (its text and chart) on a large history: seconds and peak RSS,
the old count over loaded call rows against the SQL one (issue 29).

Seeds CALLS analysed calls (default 100,000; tests/bi_seed.py), one every SPACING seconds up
to now, so that about 39,000 fall in the chart's eight weeks, each with a transcript of
TRANSCRIPT_CHARS characters, and a few missed calls; then builds the report of last week
each way, each in a fresh process (peak RSS is per process), the figures alone (text and
the chart's series) and with the chart drawn (matplotlib imported before, as after a first week):
- before: the old path (tests/report_oracle.py: every call row of the week, the week before
  and the chart's eight weeks loaded with transcript and analysis, parsed in Python), then
  the chart rendered;
- after: `weekly.plan_week` as shipped (counted by the database), chart included.
Both give the same text (checked here too). RSS growth is the peak (ru_maxrss) minus the RSS
once the app is built, before the report.

Run from the repository root:
  .venv/bin/python benchmarks/weekly_report.py [--calls N] [--postgres]
(`--postgres`: on a fresh database of the server `SALESBOT_TEST_POSTGRES` names, as the tests.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salesbot_poller.reports import weekly
from salesbot_poller.reports.weekly_chart import render_chart
from salesbot_poller.store import Call, Store
from tests import report_oracle
from tests.bi_seed import seed_analysed, seed_missed
from tests.builder import build_rig

NOW = 1_795_597_200  # 2026-11-25 09:00 UTC, a Wednesday
SPACING = 124  # seconds between calls: ~39k calls in eight weeks
TRANSCRIPT_CHARS = 4_000  # about four minutes of Russian speech
LINE = "Менеджер: Добрый день, компания «Склад-Про», слушаю вас. Клиент: Нужны стеллажи на склад. "
MONDAY = date(2026, 11, 16)
HOWS = {
    "before": "before: rows loaded, figures",
    "after": "after: SQL, figures",
    "before+chart": "before: rows loaded, with the chart",
    "after+chart": "after: SQL, with the chart",
}


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def seed(url: str, calls: int) -> None:
    store = Store.open(url, NOW)
    started = time.perf_counter()
    seed_analysed(store, calls, start=NOW - calls * SPACING, spacing=SPACING)
    seed_missed(store, NOW - 3 * 86400)
    transcript = (LINE * (TRANSCRIPT_CHARS // len(LINE) + 1))[:TRANSCRIPT_CHARS]
    with store.db.atomic():
        Call.update(transcript=transcript).execute()
    store.close()
    print(f"seeded {calls:,} analysed calls with {TRANSCRIPT_CHARS:,}-character transcripts "
          f"in {time.perf_counter() - started:.0f} s")  # fmt: skip


def measure(url: str, how: str, home: str) -> None:
    """One report in this process; prints {"seconds", "rss", "peak", "text"} as JSON."""
    rig = build_rig(Path(home), storage={"database": url}, now=datetime.fromtimestamp(NOW, UTC))
    app = rig.app
    drawn = how.endswith("+chart")
    if drawn:
        import matplotlib.figure  # noqa: F401  (imported once per process, not per report)
    else:
        setattr(weekly, "render_chart", lambda *args: b"")  # noqa: B010  # the figures alone
    before = rss_mib()
    started = time.perf_counter()
    if how.startswith("before"):
        parts = report_oracle.week_parts(app, MONDAY)
        figures = report_oracle.figures(report_oracle.calls_between(app.store, *week()))
        series, labels = report_oracle.chart_series(app, MONDAY, [m.name for m in figures.managers])
        if drawn:
            render_chart(series, labels, "chart")
    else:
        parts = weekly.plan_week(app, MONDAY, NOW, "weekly:bench")[0].payload["parts"]
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    app.store.close()
    print(json.dumps({"seconds": seconds, "rss": before, "peak": peak, "text": "\n".join(parts)}))


def week() -> tuple[int, int]:
    return weekly.midnight(MONDAY, UTC), weekly.midnight(MONDAY + timedelta(days=7), UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--measure", nargs=3, metavar=("URL", "HOW", "HOME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(*args.measure)
        return
    with tempfile.TemporaryDirectory(prefix="salesbot-weekly-") as tmp:
        database: AbstractContextManager[str]
        if args.postgres:
            from tests.databases import fresh_postgres

            database = fresh_postgres()
        else:
            database = nullcontext(f"sqlite:///{tmp}/db.sqlite")
        with database as url:
            seed(url, args.calls)
            rows = {}
            for how in HOWS:
                child = [sys.executable, __file__, "--measure", url, how, tmp]
                done = subprocess.run(child, capture_output=True, text=True, check=True, env=os.environ | {"TZ": "UTC"})
                rows[how] = json.loads(done.stdout.strip().splitlines()[-1])
    if len({row["text"] for row in rows.values()}) != 1:
        raise SystemExit("the two ways gave different reports")
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(f"\nweekly report of {MONDAY:%d.%m} over {args.calls:,} calls, {backend} (the same text both ways)\n")
    print(f"| {'how':<35} | {'seconds':>7} | {'RSS before, MiB':>15} | {'peak RSS, MiB':>13} | {'growth, MiB':>11} |")
    print(f"|{'-' * 37}|{'-' * 9}|{'-' * 17}|{'-' * 15}|{'-' * 13}|")
    for how, row in rows.items():
        growth = row["peak"] - row["rss"]
        figures = f"{row['seconds']:>7.2f} | {row['rss']:>15.0f} | {row['peak']:>13.0f} | {growth:>11.0f}"
        print(f"| {HOWS[how]:<35} | {figures} |")


if __name__ == "__main__":
    main()
