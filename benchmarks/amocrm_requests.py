"""What one poll cycle costs amoCRM: requests and wall time for 0, 10, 100 and 1000 new call
events, against the loopback fake amoCRM, which enforces 7 requests/s (an excess request gets
its HTML 429) and counts every request beyond it as a violation (each of those got a 429).

Run from the repository root:  .venv/bin/python benchmarks/amocrm_requests.py

Only amoCRM is measured: the cycle is intake (poll the events, read the notes, the names of
the leads/contacts/companies and the users), with the real composition root's amoCRM client
(`app.build_amo`: the real client, rate limiter and pause), in an App built by
tests/builder.py; the downstream services are in-memory stubs and are not run. Each row
starts from an empty database and a fresh server.
The calls are spread like a real account (`FakeAmoCRM.add_account_calls`): 70 % on leads,
20 % on contacts, 10 % on companies, over 400 distinct cards per type, with real-length ids,
each with a recording link.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salesbot_poller.pipeline.context import Cycle
from salesbot_poller.pipeline.intake import poll, resolve_new
from tests.builder import build_rig
from tests.fakes import FakeAmoCRM

TOKEN = "bench-long-lived-token"
SIZES = (0, 10, 100, 1000)
ROUTES = {
    "events": r"/api/v4/events$",
    "notes": r"/notes$",
    "names": r"/api/v4/(leads|contacts|companies)$",
    "users": r"/api/v4/users$",
    "oauth": r"/oauth2/",
}


def one_cycle(count: int) -> dict[str, float]:
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp, FakeAmoCRM(token=TOKEN) as amo:
        amo.add_account_calls(count, int(now.timestamp()) - 1800)
        amo.enforce_rate_limit = True
        amocrm = {"base_url": amo.base_url, "long_lived_token": TOKEN}
        app = build_rig(Path(tmp), real_source=True, now=now, tz=None, amocrm=amocrm).app
        store = app.store
        cycle = Cycle(app=app, now=int(now.timestamp()))
        started = time.perf_counter()
        poll(app, cycle)
        resolve_new(app, cycle)
        seconds = time.perf_counter() - started
        ready = store.stage_counts().get("ready", 0)
        store.close()
        row = {name: float(amo.count(pattern)) for name, pattern in ROUTES.items()}
        return row | {
            "events_seen": cycle.events,
            "ready": ready,
            "requests": amo.count(),
            "violations": amo.rate_violations(),
            "seconds": seconds,
        }


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    header = (
        f"{'new events':>10} | {'requests':>8} | {'events':>6} {'notes':>5} {'names':>5} {'users':>5} | "
        f"{'violations':>10} | {'ready':>5} | {'wall s':>6}"
    )
    print(header)
    print("-" * len(header))
    worst = 0
    for size in SIZES:
        row = one_cycle(size)
        worst = max(worst, int(row["violations"]))
        print(
            f"{size:>10} | {int(row['requests']):>8} | {int(row['events']):>6} {int(row['notes']):>5} "
            f"{int(row['names']):>5} {int(row['users']):>5} | {int(row['violations']):>10} | "
            f"{int(row['ready']):>5} | {row['seconds']:>6.2f}"
        )
    print("\ntargets: an idle cycle costs 1 request; 1000 events at most 25; 0 violations")
    return 1 if worst else 0


if __name__ == "__main__":
    sys.exit(main())
