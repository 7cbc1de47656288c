"""Time the per-cycle and per-command reads of the store on a long history, and show which of
them read the whole calls table.

Seeds CALLS calls (default 100,000: tests/call_history.py, 180 days of an account's calls,
mostly finished) in a SQLite database in a temporary directory, or in the PostgreSQL
database `--database` names (it must be empty: the seed is written there), then runs each
operation a few times through the real store functions (and the real `status` and `export`
commands' functions) and prints a table: the median time, and the statements that read every
row of `call` (tests/plans.py asks the database's planner).

Run from the repository root:  .venv/bin/python benchmarks/queries.py [CALLS] [--database URL]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salesbot_poller.store import Store
from tests.call_history import seed_history
from tests.plans import NOW, OPERATIONS, TABLES, captured, full_scans

RUNS = 5


def measure(store: Store) -> list[tuple[str, float, list[str]]]:
    rows = []
    for name, operation in OPERATIONS:
        with captured() as statements:
            operation(store)
        scans = sorted({line for sql, params in statements for line in full_scans(store.db, sql, params, TABLES)})
        times = []
        for _ in range(RUNS):
            started = time.perf_counter()
            operation(store)
            times.append(time.perf_counter() - started)
        rows.append((name, statistics.median(times), scans))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("calls", nargs="?", type=int, default=100_000)
    parser.add_argument("--database", help="an empty PostgreSQL database's URL (default: SQLite, temporary)")
    parser.add_argument("--seeded", help="a database seeded before (`--keep`): measured as it is, after migrating")
    parser.add_argument("--keep", help="seed this SQLite file (kept) instead of a temporary one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.seeded:
            store = Store.open(args.seeded, NOW)
            print(f"{args.seeded.split(':')[0]} database seeded before")  # the URL may hold a password
        else:
            url = args.database or f"sqlite:///{args.keep or tmp + '/salesbot.db'}"
            store = Store.open(url, NOW)
            started = time.perf_counter()
            seed_history(store, args.calls, NOW)
            print(f"{args.calls:,} calls seeded in {time.perf_counter() - started:.0f} s ({url.split(':')[0]})")
        print(f"{'operation':<44} {'median ms':>10}  full scans of {', '.join(TABLES)}")
        for name, seconds, scans in measure(store):
            print(f"{name:<44} {seconds * 1000:>10.1f}  {'; '.join(scans) or '-'}")
        store.close()


if __name__ == "__main__":
    main()
