"""Every per-cycle and per-command read is served by an index: none reads the whole calls
table (nor the other tables that grow with the history: delivery rows, seen events, the BI
calls), so its cost follows what it returns, not how long the account has run.

A few thousand calls of a long history are seeded (tests/call_history.py); each operation of
`tests.plans.OPERATIONS` runs through the real store functions (and the real `status` and
`export` functions), every statement it runs is captured as peewee sent it, and the
database's planner is asked how it would run it: SQLite's `EXPLAIN QUERY PLAN` must show no
`SCAN <table>` without an index, PostgreSQL's `EXPLAIN` no `Seq Scan on <table>`.

SQLite is asked twice: as the daemon leaves it (no statistics: the application never runs
ANALYZE) and after ANALYZE (the planner then weighs the indexes by their statistics). On
PostgreSQL the tables are ANALYZEd and sequential scans are priced out (`enable_seqscan =
off`): a few thousand rows fit in so few pages that the planner would read them whole
whichever index there is; priced out, a `Seq Scan` is left only where no index can serve.
"""

from __future__ import annotations

from collections.abc import Iterator

import peewee
import pytest

from salesbot_poller.store import Store
from tests.call_history import analyze, seed_history
from tests.plans import NOW, OPERATIONS, TABLES, captured, full_scans

pytestmark = pytest.mark.postgres  # each test runs against SQLite and against PostgreSQL

CALLS = 3000


@pytest.fixture(params=["as left", "analysed"])
def seeded(request: pytest.FixtureRequest, backend: str, database_url: str) -> Iterator[Store]:
    if backend == "postgresql" and request.param == "as left":
        pytest.skip("PostgreSQL's autovacuum analyses the tables by itself: asked once, analysed")
    store = Store.open(database_url, NOW)
    try:
        seed_history(store, CALLS, NOW)
        if request.param == "analysed":
            analyze(store)
        if isinstance(store.db, peewee.PostgresqlDatabase):
            store.db.execute_sql("SET enable_seqscan = off")  # see the module docstring
        yield store
    finally:
        store.close()


def test_no_read_of_the_whole_history(seeded: Store) -> None:
    found = []
    for name, operation in OPERATIONS:
        with captured() as statements:
            operation(seeded)
        assert statements, f"{name}: no statement captured"
        for sql, params in statements:
            if lines := full_scans(seeded.db, sql, params, TABLES):
                found.append(f"{name}: {lines} in {sql}")
    assert not found, "whole tables read:\n" + "\n".join(found)
