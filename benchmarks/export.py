"""Measure `salesbot-poller export` on a big history: rows/s and peak memory (RSS), on SQLite
and, with a server, on PostgreSQL.

Seeds 100,000 analysed calls (four rubric items, objections, next steps: tests/bi_seed.py;
a tracker hit in every fourth call) in a SQLite database in a temporary directory, and in a
database of its own on the PostgreSQL server of `--postgres` (default:
$SALESBOT_TEST_POSTGRES; dropped after; without one PostgreSQL is skipped with a line). Then
runs the real command line (`python -m salesbot_poller export`) in a child process for each
format over periods of about 10,000 and of all the calls, and over a day without calls (the
child's start: the interpreter, its imports, the database opened; the least of three). The
CPU time and peak RSS of the child are read from `wait4`, so each figure is that export's
alone. rows/s is the calls over the child's CPU seconds less the start's: the export's own
speed, steady on a loaded machine (issue 29 asks >= 20k rows/s, flat from 10k to 100k: a
page at a time, each found by keyset). `total s` is the wall time a person waits.

Run from the repository root:  .venv/bin/python benchmarks/export.py [--calls 100000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salesbot_poller.store import Store
from salesbot_poller.store.base import insert_rows
from salesbot_poller.store.models import BiCall, TrackerHit
from tests.bi_seed import seed_analysed

SPACING = 86  # seconds between seeded calls: about 1,000 a day
START = datetime(2026, 1, 5, tzinfo=UTC)
TRACKER = "Конкурент"


def seed(url: str, calls: int) -> float:
    """Seeds `calls` calls into the empty database at `url`, in a child process (the
    children that export are forked from this one: a big parent would count in their peak
    RSS); returns the seconds it took."""
    started = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--seed", url, "--calls", str(calls)], check=True)
    return time.perf_counter() - started


def seed_here(url: str, calls: int) -> None:
    store = Store.open(url, int(START.timestamp()))
    seed_analysed(store, calls, start=int(START.timestamp()), spacing=SPACING)
    with store.db.atomic():
        ids = [int(fact.call_id) for fact in BiCall.select(BiCall.call_id).order_by(BiCall.call_id)]
        hits = [
            {"call_id": call_id, "position": 0, "tracker": TRACKER, "speaker": "client", "at": 12, "phrase": "у них"}
            for call_id in ids[::4]
        ]
        insert_rows(store.db, TrackerHit, hits)
    store.close()


def run_export(config: Path, since: str, until: str, fmt: str, output: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one `export` child process."""
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
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # Linux reports KiB


def measure(name: str, database: str, home: Path, calls: int) -> None:
    """The table's rows of one database."""
    config = home / f"config-{name}.toml"
    config.write_text(
        f'[amocrm]\ntimezone = "Europe/Moscow"\n[storage]\ndatabase = "{database}"\naudio_dir = "{home}/a"\n'
        f'[[trackers]]\nname = "{TRACKER}"\nphrases = ["у конкурентов"]\n',
        encoding="utf-8",
    )
    first = START.date()
    empty = (first - timedelta(days=10)).isoformat()
    # Whole days in the account's zone (UTC+3): about 10,000 calls, then all of them.
    last = (START + timedelta(seconds=SPACING * calls)).date() + timedelta(days=1)
    periods = [(START + timedelta(seconds=SPACING * 10_000)).date().isoformat(), last.isoformat()]
    for fmt in ("csv", "jsonl"):
        output = home / f"calls.{fmt}"
        start = min(run_export(config, empty, empty, fmt, output)[1] for _ in range(3))
        for until in periods:
            seconds, cpu, peak = run_export(config, first.isoformat(), until, fmt, output)
            with output.open("rb") as written:
                rows = sum(1 for _ in written) - (fmt == "csv")  # no newline inside a seeded cell
            speed = rows / max(cpu - start, 1e-3)
            size = output.stat().st_size / 1e6
            print(
                f"| {name:<10} | {fmt:<6} | {rows:>8,} | {seconds:>7.1f} | {cpu:>5.1f} | {start:>7.1f} "
                f"| {speed:>9,.0f} | {peak:>11.0f} | {size:>7.1f} |"
            )


def postgres_database(server: str) -> tuple[str, str]:
    """A new, empty database on `server`: (its URL, its name)."""
    from salesbot_poller.store.postgres import open_postgres

    name = f"salesbot_export_bench_{uuid.uuid4().hex[:8]}"
    admin = open_postgres(server)
    admin.execute_sql(f'CREATE DATABASE "{name}"')  # type: ignore[no-untyped-call]
    admin.close()
    return urlunsplit(urlsplit(server)._replace(path=f"/{name}")), name


def drop_postgres(server: str, name: str) -> None:
    from salesbot_poller.store.postgres import open_postgres

    admin = open_postgres(server)
    admin.execute_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[no-untyped-call]
    admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--postgres", default=os.environ.get("SALESBOT_TEST_POSTGRES", ""))
    parser.add_argument("--seed", default="", help=argparse.SUPPRESS)  # the seeding child's database
    args = parser.parse_args()
    if args.seed:
        seed_here(args.seed, args.calls)
        return
    with tempfile.TemporaryDirectory(prefix="salesbot-export-") as tmp:
        home = Path(tmp)
        databases = [("sqlite", f"sqlite:///{home}/db.sqlite", "")]
        if args.postgres:
            url, name = postgres_database(args.postgres)
            databases.append(("postgresql", url, name))
        else:
            print("postgresql: skipped (no --postgres URL and SALESBOT_TEST_POSTGRES is not set)")
        try:
            for label, url, _ in databases:
                print(f"{label}: seeded {args.calls:,} analysed calls in {seed(url, args.calls):.0f} s")
            head = ("database", "format", "calls", "total s", "CPU s", "start s", "rows/s", "peak RSS MB", "file MB")
            print("| {:<10} | {:<6} | {:>8} | {:>7} | {:>5} | {:>7} | {:>9} | {:>11} | {:>7} |".format(*head))
            print(f"|{'-' * 12}|{'-' * 8}|{'-' * 10}|{'-' * 9}|{'-' * 7}|{'-' * 9}|{'-' * 11}|{'-' * 13}|{'-' * 9}|")
            for label, url, _ in databases:
                measure(label, url, home, args.calls)
        finally:
            for _, _, name in databases:
                if name:
                    drop_postgres(args.postgres, name)


if __name__ == "__main__":
    main()
