"""Measure the operations whose cost may grow with the call history (issue 29), on databases
of 1k, 100k and 1M calls, SQLite and PostgreSQL: seconds (or rows/s) and peak RSS of each.

Seeds each database once through the store's bulk path (tests/scale_seed.py: 20% missed
calls, 20 managers, two years, transcripts of 2-5 KB, analyses with rubric items and quotes,
BI rows, personal data already removed from calls older than a year) and keeps it for the
next run: SQLite files under `--cache`, PostgreSQL databases `salesbot_scale_<size>_v<N>` on
the server of `--postgres` (default: $SALESBOT_TEST_POSTGRES; without one PostgreSQL is
skipped with a line). Each operation runs in a child process of its own (spawned), so its
peak RSS (the peak after the operation, less the RSS once the store was opened) is its alone.
Writes (retention) are rolled back, so the cached database stays as seeded.

The table: the time of each operation (the median of a few runs after a warm-up for the
quick ones; export in rows/s), the peak RSS at the largest size, the growth 100k -> 1M (the
1M figure over the 100k one) and the target of issue 29, met or not at the largest size.

Run from the repository root:
  .venv/bin/python benchmarks/scale.py [--sizes 1k,100k,1m] [--db sqlite,postgres]
      [--postgres URL] [--postgres-sizes 1k,100k] [--cache /tmp/salesbot-scale] [--only status,find]
A size not seeded yet is seeded first (1M on SQLite: about 8 minutes on a loaded 2-core
machine, 3.9 GB); a cache of an older seed version may be deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salesbot_poller.pipeline.context import App
from tests import scale_seed

# --- Adapter: every call into the project, by its current public name -----------------------
# Other work changes these operations (retention job, SQL aggregation, indexes): adjust here.

RETENTION_DAYS = 180  # the default: a backlog of calls 180-365 days old to clear (see scale_seed)
LANE_CAP = 10.0  # seconds: a retention pass still going then is stopped (its hold is "> cap")
CAPPED = "stopped at the cap"
HOLD_NOTE = "batch hold: "


def build_app(url: str, retention_days: int) -> App:
    """The App of the benchmark: the real store at `url`, in-memory fakes for the services
    (nothing is polled or sent: the fake source has no new events)."""
    from tests.builder import build_rig

    home = Path(os.environ.get("SCALE_HOME", "/tmp/salesbot-scale"))
    config = (
        f'[amocrm]\nbase_url = "https://acme.amocrm.ru"\nlong_lived_token = "amo-token"\n'
        f'[openai]\napi_key = "sk-key"\n[telegram]\nbot_token = "123:TEST"\nchat_id = "-100"\n'
        f'[storage]\ndatabase = "{url}"\naudio_dir = "{home}/audio"\nretention_days = {retention_days}\n'
    )
    return build_rig(config, now=datetime.fromtimestamp(scale_seed.END, UTC)).app


def op_retention_batch(app: App, now: int) -> str:
    """One batch of retention: find the calls to clear (from the keyset's start), clear them."""
    from salesbot_poller.pipeline import retention

    started = time.perf_counter()
    batch = app.store.calls_to_clear(now - RETENTION_DAYS * 86400, retention.BATCH)
    found = time.perf_counter() - started
    app.store.clear_personal(batch, now, retention.REASON)
    return f"{len(batch)} calls, found in {found * 1e3:.0f} ms"


def op_retention_hold(app: App, now: int) -> str:
    """Retention as the daemon's own job runs it (`LANE_CAP` seconds of budget): the figure is
    its longest batch, find and clear (one transaction: what any other lane may wait for)."""
    from salesbot_poller.pipeline import retention

    store, longest, batches = app.store, [0.0], [0]
    find, clear = store.calls_to_clear, store.clear_personal
    timer = [0.0]

    def timed_find(*args: Any, **kwargs: Any) -> Any:
        timer[0] = time.perf_counter()
        return find(*args, **kwargs)

    def timed_clear(*args: Any, **kwargs: Any) -> Any:
        result = clear(*args, **kwargs)
        longest[0] = max(longest[0], time.perf_counter() - timer[0])
        batches[0] += 1
        return result

    setattr(store, "calls_to_clear", timed_find)  # noqa: B010  # this instance only
    setattr(store, "clear_personal", timed_clear)  # noqa: B010
    try:
        retention.run(app, now, budget=LANE_CAP)
    finally:
        del store.calls_to_clear, store.clear_personal
    return f"{HOLD_NOTE}{longest[0] * 1e3:.0f} ms longest of {batches[0]} batch(es) in {LANE_CAP:.0f} s"


def op_followup(app: App, now: int) -> str:
    """The follow-ups' query of each cycle: missed calls alerted and not returned."""
    from salesbot_poller.pipeline import followup

    return f"{len(app.store.alerted_unreturned(now - followup.WINDOW_SECONDS))} calls"


def op_idle_cycle(app: App, now: int) -> str:
    """An intake pass with nothing new (retention off here: measured on its own)."""
    from salesbot_poller import lanes
    from salesbot_poller.pipeline.context import Cycle

    lanes.intake_steps(app, Cycle(app=app, now=now))
    return ""


def op_status(app: App, now: int) -> str:
    from salesbot_poller.cli import commands

    lines: list[str] = []
    commands.status(app.store, lines.append, app.config, now)
    return f"{len(lines)} lines"


def op_weekly(app: App, now: int, before_history: bool = False) -> str:
    """The last full week's report, planned (text and chart), nothing sent. `before_history`:
    a week with no calls (the warm-up: imports and chart machinery out of the figure)."""
    from salesbot_poller.reports import weekly

    monday = weekly.monday_of(datetime.fromtimestamp(now, UTC).date()) - timedelta(days=7)
    if before_history:
        monday -= timedelta(seconds=scale_seed.SPAN + 14 * 86400)
    weekly.plan_week(app, monday, now, f"weekly:{monday}:scale")
    calls = (scale_seed.seeded(app.store) or 0) * 7 * 86400 // scale_seed.SPAN  # evenly spread
    return f"~{calls:,} calls a week"


def op_find(app: App, now: int) -> str:
    from salesbot_poller.reports import bot_answers

    parts = bot_answers.find(app, scale_seed.RARE_WORD)
    return parts[0].split("</b>")[0].split(": ")[-1] + " found"


def op_find_number(app: App, now: int) -> str:
    """`/find` by number: a recent call's number, written another way than it is stored."""
    from salesbot_poller.reports import bot_answers

    n = (scale_seed.seeded(app.store) or 10) // 10 * 10 - 7  # position 3: a `+7916…` number
    parts = bot_answers.find(app, f"8 916 {n // 10_000 % 1000:03d}-{n // 100 % 100:02d}-{n % 100:02d}")
    return parts[0].split("</b>")[0].split(": ")[-1] + " found"


def op_export(app: App, now: int) -> str:
    """`export` of the whole history as CSV (to /dev/null): rows/s."""
    from salesbot_poller.cli import export

    since = datetime.fromtimestamp(scale_seed.END - scale_seed.SPAN, UTC).date()
    with open(os.devnull, "w", encoding="utf-8") as out:
        rows = export.export(app.store, since, datetime.fromtimestamp(now, UTC).date(), UTC, "csv", out)
    return f"rows={rows}"


@dataclass(frozen=True)
class Op:
    name: str
    run: Callable[..., str]
    target: str
    repeat: bool = True  # timed several times (median) after a warm-up run
    rollback: bool = False  # its writes are undone
    retention_days: int = 0
    limit: float | None = None  # seconds the target allows (export: rows/s it asks for at least)
    megabytes: float | None = None  # peak RSS the target allows


OPS = (
    Op("retention: one batch", op_retention_batch, "", False, True, RETENTION_DAYS),
    Op("retention: longest hold", op_retention_hold, "<= 1 s", False, True, RETENTION_DAYS, 1.0),
    Op("follow-up query", op_followup, "<= 10 ms", limit=0.010),
    Op("idle intake cycle", op_idle_cycle, "<= 10 ms", limit=0.010),
    Op("status", op_status, "<= 300 ms", limit=0.300),
    Op("weekly report", op_weekly, "<= 2 s, 150 MB", False, limit=2.0, megabytes=150),
    Op("/find", op_find, "<= 300 ms", limit=0.300),
    Op("/find <number>", op_find_number, "<= 300 ms", limit=0.300),
    Op("export (rows/s)", op_export, ">= 20k rows/s", False, limit=20_000),
)

# --- One operation in a child process ----------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _peak_reset() -> int:
    """The RSS now (KiB), with the process's peak set back to it where Linux allows
    (`clear_refs` 5), so that the peak read after the operation is the operation's."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_kib() -> int:
    """The process's peak RSS (KiB) since `_peak_reset`. Not `ru_maxrss` where /proc is
    there: Linux carries the parent's peak over into a spawned child (fork, then exec)."""
    return _status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child(url: str, index: int, home: str, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    os.environ["SCALE_HOME"] = home
    op = OPS[index]
    app = build_app(url, op.retention_days)
    now = scale_seed.END
    if op.run is op_weekly:
        op_weekly(app, now, before_history=True)
    baseline = _peak_reset()
    times: list[float] = []
    note = ""
    transaction = app.store.db.atomic() if op.rollback else contextlib.nullcontext()
    with transaction as txn:
        while True:
            started = time.perf_counter()
            note = op.run(app, now)
            times.append(time.perf_counter() - started)
            if not op.repeat or len(times) >= 6 or sum(times) > 3:
                break
        if op.rollback and txn is not None:
            txn.rollback()
    peak = (_peak_kib() - baseline) / 1024
    seconds = statistics.median(times[1:]) if len(times) > 1 else times[0]
    if op.run is op_retention_hold:  # the figure is its longest batch, not the whole run
        seconds = float(note.split(HOLD_NOTE)[1].split(" ms")[0]) / 1e3
    elif op.run is op_export:
        rows = int(note.split("=")[1])
        note = f"{rows:,} rows in {times[0]:.1f} s"
        seconds = rows / times[0]
    elif len(times) > 1:
        note = (note + "; " if note else "") + f"cold {times[0] * 1e3:.0f} ms"
    elif op.repeat:
        note = (note + "; " if note else "") + "one cold run (over 3 s: not repeated)"
    results.put((seconds, peak, note))


def measure(url: str, index: int, home: str) -> tuple[float, float, str]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_child, args=(url, index, home, results))
    child.start()
    child.join()
    if child.exitcode != 0:
        return float("nan"), float("nan"), f"failed (exit {child.exitcode})"
    got: tuple[float, float, str] = results.get(timeout=5)
    return got


# --- Seeded databases, kept between runs --------------------------------------------------------

SIZES = {"1k": 1_000, "100k": 100_000, "1m": 1_000_000}
LABELS = {"1k": "1k", "100k": "100k", "1m": "1M"}


def _seed(url: str, calls: int, sqlite: bool) -> None:
    from salesbot_poller.store import Store

    store = Store.open(url, scale_seed.END)
    if sqlite:  # for the seeding only: this connection is closed after it
        for pragma in ("synchronous = OFF", "cache_size = -262144", "temp_store = MEMORY"):
            store.db.execute_sql(f"PRAGMA {pragma}")  # type: ignore[no-untyped-call]
    started = time.perf_counter()
    scale_seed.seed(store, calls)
    if not sqlite:
        # What autovacuum would have done by the next morning.
        store.db.execute_sql("ANALYZE")  # type: ignore[no-untyped-call]
    store.close()
    print(f"  seeded {calls:,} calls in {time.perf_counter() - started:.0f} s", flush=True)


def _seed_apart(url: str, calls: int, sqlite: bool) -> None:
    """`_seed` in a child process: this one stays small (and so do the children it spawns)."""
    child = multiprocessing.get_context("spawn").Process(target=_seed, args=(url, calls, sqlite))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"seeding {url.split('://')[0]} with {calls:,} calls failed (exit {child.exitcode})")


def sqlite_database(cache: Path, size: str) -> str:
    from salesbot_poller.store import Store

    path = cache / f"sqlite-{size}-v{scale_seed.VERSION}.db"
    url = f"sqlite:///{path}"
    if path.exists():
        store = Store.open(url, scale_seed.END)
        done = scale_seed.seeded(store)
        store.close()
        if done == SIZES[size]:
            return url
        for stale in cache.glob(f"{path.name}*"):
            stale.unlink()
    _seed_apart(url, SIZES[size], sqlite=True)
    return url


def postgres_database(server: str, size: str) -> str:
    from salesbot_poller.store import Store
    from salesbot_poller.store.postgres import open_postgres

    name = f"salesbot_scale_{size}_v{scale_seed.VERSION}"
    url = urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    admin = open_postgres(server)
    try:
        exists = admin.execute_sql("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()  # type: ignore[no-untyped-call]
        if exists:
            store = Store.open(url, scale_seed.END)
            done = scale_seed.seeded(store)
            store.close()
            if done == SIZES[size]:
                return url
            admin.execute_sql(f'DROP DATABASE "{name}" WITH (FORCE)')  # type: ignore[no-untyped-call]
        admin.execute_sql(f'CREATE DATABASE "{name}"')  # type: ignore[no-untyped-call]
    finally:
        admin.close()
    _seed_apart(url, SIZES[size], sqlite=False)
    return url


# --- The table --------------------------------------------------------------------------------


def _cell(op: Op, value: float, note: str = "") -> str:
    if value != value:  # NaN: failed
        return "failed"
    if CAPPED in note:
        return f"> {LANE_CAP:.0f} s"
    if op.run is op_export:
        return f"{value / 1e3:.1f}k/s"
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"


def meets(op: Op, value: float, peak: float, note: str) -> str:
    """Whether the op's target is met: "yes" or "NO"; "" when it has none."""
    if op.limit is None:
        return ""
    if value != value or CAPPED in note:
        return "NO"
    fast = value >= op.limit if op.run is op_export else value <= op.limit
    return "yes" if fast and (op.megabytes is None or peak <= op.megabytes) else "NO"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1k,100k")
    parser.add_argument("--db", default="sqlite,postgres")
    parser.add_argument("--postgres", default=os.environ.get("SALESBOT_TEST_POSTGRES", ""))
    parser.add_argument("--postgres-sizes", default="", help="PostgreSQL's sizes when not --sizes (e.g. 1k,100k)")
    parser.add_argument("--cache", default="/tmp/salesbot-scale")
    parser.add_argument("--only", default="", help="comma-separated words of operation names")
    args = parser.parse_args(argv)
    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    wanted = [i for i, op in enumerate(OPS) if not args.only or any(w in op.name for w in args.only.split(","))]
    figures: dict[tuple[int, str], dict[str, tuple[float, float, str]]] = {}
    for db in [d.strip() for d in args.db.split(",") if d.strip()]:
        if db == "postgres" and not args.postgres:
            print("postgres: skipped (no --postgres URL and SALESBOT_TEST_POSTGRES is not set)")
            continue
        chosen = [x.strip().lower() for x in args.postgres_sizes.split(",") if x.strip()] if db == "postgres" else []
        for size in chosen or sizes:
            print(f"{db} {size}: preparing the database", flush=True)
            url = sqlite_database(cache, size) if db == "sqlite" else postgres_database(args.postgres, size)
            for index in wanted:
                seconds, peak, note = measure(url, index, str(cache))
                figures.setdefault((index, db), {})[size] = (seconds, peak, note)
                cell = _cell(OPS[index], seconds, note)
                print(f"  {OPS[index].name:<22} {cell:>10}  +{peak:.0f} MB  {note}", flush=True)
    print_table(figures, sizes)


def print_table(figures: dict[tuple[int, str], dict[str, tuple[float, float, str]]], sizes: list[str]) -> None:
    if not figures:
        return
    out = io.StringIO()
    out.write("\n| op | db | 1k | 100k | 1M | peak RSS | growth 100k→1M | target (met?) |\n")
    out.write("|---|---|---|---|---|---|---|---|\n")
    for (index, db), by_size in sorted(figures.items(), key=lambda item: (item[0][0], item[0][1] != "sqlite")):
        op = OPS[index]
        cells = [_cell(op, by_size[s][0], by_size[s][2]) if s in by_size else "" for s in SIZES]
        largest = [s for s in SIZES if s in by_size][-1]
        peak = f"+{by_size[largest][1]:.0f} MB ({LABELS[largest]})"
        growth = ""
        compared = [by_size[s] for s in ("100k", "1m") if s in by_size]
        if len(compared) == 2 and compared[0][0] > 0 and not any(CAPPED in note for _, _, note in compared):
            growth = f"×{by_size['1m'][0] / by_size['100k'][0]:.1f}"
        seconds, rss, note = by_size[largest]
        verdict = meets(op, seconds, rss, note)
        target = f"{op.target}: {verdict} at {LABELS[largest]}" if verdict else op.target
        out.write(f"| {op.name} | {db} | {' | '.join(cells)} | {peak} | {growth} | {target} |\n")
    print(out.getvalue(), end="")


if __name__ == "__main__":
    main(sys.argv[1:])
