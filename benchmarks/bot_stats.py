"""Measure the bot's `/stats 30d` on a month of calls: peak memory (tracemalloc) and seconds.

Seeds CALLS analysed calls (default 3,000; tests/bi_seed.py) over the 30 days before now in
a SQLite database in a temporary directory, each with a transcript of TRANSCRIPT_CHARS
characters as a ten-minute call has, then computes the answer's figures both ways, as
`bot_answers.stats` does (this period and the one before):
- before: the old count (tests/report_oracle.py: `figures(calls_between(...))`), every call row loaded with its
  transcript and analysis;
- after: `team_stats.figures_in_store(store, ...)`, counted by the database (GROUP BY).
Both give the same text (checked here too). The peak of the "after" row must not grow with
the number of calls.

Run from the repository root:  .venv/bin/python benchmarks/bot_stats.py [CALLS]
"""

from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salesbot_poller.reports import team_stats, weekly
from salesbot_poller.store import Call, Store
from tests import report_oracle
from tests.bi_seed import seed_analysed

NOW = 1_795_597_200  # 2026-11-25 09:00 UTC
DAYS = 30
TRANSCRIPT_CHARS = 9_000  # about ten minutes of Russian speech
LINE = "Менеджер: Добрый день, компания «Склад-Про», слушаю вас. Клиент: Нужны стеллажи на склад. "


def before(store: Store, start: int) -> str:
    current = report_oracle.figures(report_oracle.calls_between(store, start, NOW))
    previous = report_oracle.figures(report_oracle.calls_between(store, start - DAYS * 86400, start))
    return answer(current, previous)


def after(store: Store, start: int) -> str:
    current = team_stats.figures_in_store(store, start, NOW)
    previous = team_stats.figures_in_store(store, start - DAYS * 86400, start)
    return answer(current, previous)


def answer(current: team_stats.Figures, previous: team_stats.Figures) -> str:
    averages = {m.name: m.average for m in previous.managers}
    for manager in current.managers:
        manager.previous = averages.get(manager.name)
    return "\n".join(weekly.render_team("📊 Статистика за 30 дней", current))


def measure(run: Callable[[Store, int], str], store: Store, start: int) -> tuple[float, float, str]:
    """Peak traced memory (KB) and seconds of one run, and its text."""
    tracemalloc.start()
    started = time.perf_counter()
    text = run(store, start)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1e3, seconds, text


def main(calls: int) -> None:
    with tempfile.TemporaryDirectory(prefix="salesbot-stats-") as tmp:
        store = Store.open(f"sqlite:///{tmp}/db.sqlite", NOW)
        start = NOW - DAYS * 86400
        seeding = time.perf_counter()
        seed_analysed(store, calls, start=start, spacing=DAYS * 86400 // calls)
        transcript = (LINE * (TRANSCRIPT_CHARS // len(LINE) + 1))[:TRANSCRIPT_CHARS]
        with store.db.atomic():
            Call.update(transcript=transcript).execute()
        print(f"seeded {calls:,} analysed calls with {TRANSCRIPT_CHARS:,}-character transcripts "
              f"in {time.perf_counter() - seeding:.1f} s")  # fmt: skip
        rows = []
        texts = []
        for name, run in (("before: call rows loaded", before), ("after: counted in SQL", after)):
            peak, seconds, text = measure(run, store, start)
            rows.append((name, peak, seconds))
            texts.append(text)
        store.close()
    if texts[0] != texts[1]:
        raise SystemExit("the two ways gave different answers")
    print(f"\n/stats 30d over {calls:,} calls (the same answer both ways)\n")
    print(f"| {'how':<26} | {'peak memory, KB':>15} | {'seconds':>7} |")
    print(f"|{'-' * 28}|{'-' * 17}|{'-' * 9}|")
    for name, peak, seconds in rows:
        print(f"| {name:<26} | {peak:>15,.0f} | {seconds:>7.2f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3_000)
