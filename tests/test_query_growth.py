"""The per-cycle and per-command reads do not grow with the history (SQLite): what a read
costs is counted in SQLite's own steps (its virtual machine's instructions, through the
connection's progress handler: no clock, so no flaky timing), on a database holding half a
year of calls, then again once three times as many older, finished calls lie behind them.
A read served by an index over what it returns costs the same; one that walks every missed
call, every call of a stage, or every row before a page, costs three times more.

The plans of the same reads are checked in tests/test_query_plans.py; this test catches
what a plan does not show as a scan: an index walked over the whole history (the follow-ups
by `stage` alone, the export's pages from the start of the period).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from salesbot_poller.store import Store
from tests.call_history import seed_history
from tests.plans import DAY, NOW, OPERATIONS

RECENT = 1500  # half a year of calls
OLDER = 3 * RECENT  # then three times as many before them
GROWTH = 1.3  # a read may cost this much more, and `SLACK` steps (plan choices, page splits)
SLACK = 2_000
# Reads whose answer itself grows with the history: searched for their own targets.
UNBOUNDED = ("/find", "export")


def steps(store: Store, read: Callable[[Store], object]) -> int:
    """SQLite's virtual machine instructions `read` takes (counted by hundreds)."""
    counted = [0]

    def tick() -> int:
        counted[0] += 1
        return 0  # 0: go on

    connection = store.db.connection()
    connection.set_progress_handler(tick, 100)
    try:
        read(store)
    finally:
        connection.set_progress_handler(None, 100)
    return counted[0] * 100


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:  # type: ignore[no-untyped-def]
    opened = Store.open(f"sqlite:///{tmp_path}/salesbot.db", NOW)
    try:
        seed_history(opened, RECENT, NOW)
        yield opened
    finally:
        opened.close()


def _export_pages(store: Store) -> None:
    for _ in store.export_pages(NOW - 400 * DAY, NOW, page=20):  # the real pages, smaller
        pass


@pytest.mark.slow
def test_per_cycle_and_per_command_reads_cost_the_same_over_a_longer_history(store: Store) -> None:
    reads = [(name, read) for name, read in OPERATIONS if not name.startswith(UNBOUNDED)]
    before = {name: steps(store, read) for name, read in reads}
    seed_history(store, OLDER, NOW - 181 * DAY, days=180, prefix="older", finished=True)
    after = {name: steps(store, read) for name, read in reads}
    grown = {name: (before[name], after[name]) for name, _ in reads if after[name] > before[name] * GROWTH + SLACK}
    assert not grown, f"reads that grew with the history (steps before, after): {grown}"


@pytest.mark.slow
def test_an_export_page_costs_the_same_at_the_end_of_a_long_period(store: Store) -> None:
    """Per row exported, a period of three times the calls costs no more: each page starts
    where the last one ended, not at the start of the period."""
    short = steps(store, _export_pages)
    seed_history(store, OLDER, NOW - 181 * DAY, days=180, prefix="older", finished=True)
    long = steps(store, _export_pages)
    rows = store.db.execute_sql("SELECT COUNT(*) FROM bi_call").fetchone()[0]  # type: ignore[no-untyped-call]
    recent_rows = store.db.execute_sql(  # type: ignore[no-untyped-call]
        "SELECT COUNT(*) FROM bi_call WHERE started_at >= ?", (NOW - 180 * DAY,)
    ).fetchone()[0]
    assert long / rows <= short / recent_rows * GROWTH, (short, recent_rows, long, rows)
