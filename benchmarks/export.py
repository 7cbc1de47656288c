"""Measure `salesbot-poller export` on a big history: seconds and peak memory (RSS).

Seeds 100,000 analysed calls (four rubric items, objections, next steps: tests/bi_seed.py)
in a SQLite database in a temporary directory, about 1,000 a day, then runs the real command
line (`python -m salesbot_poller export`) in a child process for each format, once for the
first day (about 1,000 calls) and once for the whole history: the peak RSS of the child is
read from `wait4`, so each figure is that export's alone. The export streams a page of calls
at a time: its memory must not grow with the number of calls, only its time.

Run from the repository root:  .venv/bin/python benchmarks/export.py [CALLS]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salesbot_poller.store import Store
from tests.bi_seed import seed_analysed

SPACING = 86  # seconds between seeded calls: about 1,000 a day
START = datetime(2026, 1, 5, tzinfo=UTC)


def run_export(config: Path, since: str, until: str, fmt: str, output: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one `export` child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESBOT_")} | {"SALESBOT_CONFIG": str(config)}
    command = [sys.executable, "-m", "salesbot_poller", "export", "--since", since, "--until", until]
    started = time.perf_counter()
    child = subprocess.Popen(
        [*command, "--format", fmt, "--output", str(output)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"export failed: {child.stderr.read().decode() if child.stderr else status}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def main(calls: int) -> None:
    with tempfile.TemporaryDirectory(prefix="salesbot-export-") as tmp:
        home = Path(tmp)
        database = f"sqlite:///{home}/db.sqlite"
        seeding = time.perf_counter()
        store = Store.open(database, int(START.timestamp()))
        seed_analysed(store, calls, start=int(START.timestamp()), spacing=SPACING)
        store.close()
        print(f"seeded {calls:,} analysed calls in {time.perf_counter() - seeding:.0f} s")
        config = home / "config.toml"
        config.write_text(f'[amocrm]\ntimezone = "UTC"\n[storage]\ndatabase = "{database}"\naudio_dir = "{home}/a"\n')
        first = START.date().isoformat()
        last = (START + timedelta(seconds=SPACING * calls)).date().isoformat()
        head = ("format", "period", "calls", "seconds", "peak RSS MB", "file MB")
        print("| {:<6} | {:<24} | {:>8} | {:>7} | {:>11} | {:>7} |".format(*head))
        print(f"|{'-' * 8}|{'-' * 26}|{'-' * 10}|{'-' * 9}|{'-' * 13}|{'-' * 9}|")
        for fmt in ("csv", "jsonl"):
            for until, count in ((first, min(calls, 86400 // SPACING + 1)), (last, calls)):
                output = home / f"calls.{fmt}"
                seconds, peak = run_export(config, first, until, fmt, output)
                size = output.stat().st_size / 1e6
                period = f"{first}..{until}"
                print(f"| {fmt:<6} | {period:<24} | {count:>8,} | {seconds:>7.1f} | {peak:>11.0f} | {size:>7.1f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
