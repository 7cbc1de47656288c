"""The SQL a piece of real code runs, and whether the database would answer any of it by
reading a whole table (tests/test_query_plans.py, benchmarks/queries.py).

`captured()` records every statement peewee executes in the block (peewee logs each one,
with its parameters, to its `peewee` logger at DEBUG), so a test runs the store's own
functions, or a whole command, and looks at exactly what they asked; `full_scans` asks the
database for the plan of one statement (SQLite: `EXPLAIN QUERY PLAN`, PostgreSQL: `EXPLAIN`)
and returns its lines that read every row of one of the tables named.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import peewee

from salesbot_poller.cli.commands import status
from salesbot_poller.cli.export import export
from salesbot_poller.domain import Stage
from salesbot_poller.lanes import ALERT_STAGES, WORK_STAGES
from salesbot_poller.phones import key
from salesbot_poller.pipeline.followup import FOLLOW_UP_KINDS, WINDOW_SECONDS
from salesbot_poller.store import Delivery, Store

Statement = tuple[str, Sequence[Any]]
TABLES = ("call", "delivery", "seenevent", "bi_call")  # the tables that grow with the history
EXPLAINED = ("SELECT", "UPDATE", "DELETE", "WITH")  # an INSERT of VALUES reads no table


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.statements: list[Statement] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, tuple) and len(record.msg) == 2:  # peewee's (sql, params)
            sql, params = record.msg
            self.statements.append((str(sql), tuple(params or ())))


@contextmanager
def captured() -> Iterator[list[Statement]]:
    """The statements peewee runs inside the block, in order, with their parameters."""
    logger = logging.getLogger("peewee")
    recorder = _Recorder()
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # the test's log capture need not hold every statement
    logger.addHandler(recorder)
    try:
        yield recorder.statements
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(level)
        logger.propagate = propagate


def _names(sql: str, table: str) -> set[str]:
    """What `table` is called in `sql`: its name, and the alias each mention gives it."""
    names = {table}
    pattern = rf'(?:FROM|JOIN|UPDATE)\s+"?{table}"?(?:\s+(?:AS\s+)?"?(\w+)"?)?'
    for alias in re.findall(pattern, sql, flags=re.IGNORECASE):
        if alias and alias.upper() not in {"WHERE", "ON", "SET", "JOIN", "LEFT", "INNER", "ORDER", "GROUP", "LIMIT"}:
            names.add(alias)
    return names


def plan(db: peewee.Database, sql: str, params: Sequence[Any]) -> list[str]:
    """The database's plan of one statement, a line per step."""
    if isinstance(db, peewee.PostgresqlDatabase):
        rows = db.execute_sql("EXPLAIN " + sql, params).fetchall()  # type: ignore[no-untyped-call]
        return [str(row[0]) for row in rows]
    rows = db.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()  # type: ignore[no-untyped-call]
    return [str(row[-1]) for row in rows]


def full_scans(db: peewee.Database, sql: str, params: Sequence[Any], tables: Iterable[str]) -> list[str]:
    """The plan's lines that read every row of one of `tables`: SQLite's `SCAN <table>`
    without an index (a scan of an index, covering or partial, is no such read), PostgreSQL's
    `Seq Scan on <table>`."""
    if not sql.lstrip().upper().startswith(EXPLAINED):
        return []
    postgres = isinstance(db, peewee.PostgresqlDatabase)
    found = []
    for table in tables:
        if not re.search(rf'\b"?{table}"?\b', sql):
            continue
        names = "|".join(re.escape(name) for name in _names(sql, table))
        for line in plan(db, sql, params):
            if postgres:
                if re.search(rf'Seq Scan on "?{table}"?\b', line):
                    found.append(line.strip())
            elif re.match(rf"\s*SCAN ({names})\b", line) and "INDEX" not in line:
                found.append(line.strip())
    return found


# --- The reads whose plans are checked and timed: the real functions, as the lanes, the
# bot and the commands call them.

NOW = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())
DAY = 86400


def _claim(store: Store) -> None:
    call = store.claim_next("bench", NOW, WORK_STAGES, "conversation")
    if call is not None:
        store.release(call, "bench")


def _export(store: Store) -> None:
    until = datetime.fromtimestamp(NOW, UTC).date()
    export(store, until - timedelta(days=200), until, UTC, "csv", io.StringIO())


OPERATIONS: list[tuple[str, Callable[[Store], object]]] = [
    ("follow-ups: alerted, not returned (24 h)", lambda s: s.alerted_unreturned(NOW - WINDOW_SECONDS)),
    ("follow-ups: outgoing calls (24 h)", lambda s: s.outgoing_since(NOW - WINDOW_SECONDS)),
    ("follow-ups: pending replies", lambda s: s.pending(kinds=FOLLOW_UP_KINDS)),
    ("/missed: not returned (7 days)", lambda s: s.unreturned_missed(NOW - 7 * DAY)),
    ("intake: new calls due", lambda s: s.due_calls(NOW, [Stage.NEW])),
    ("intake: missed-call alerts due", lambda s: s.due_calls(NOW, ALERT_STAGES, kind="missed")),
    ("intake: other destinations due", lambda s: s.due_extras(NOW)),
    ("budget notice: calls put off", lambda s: s.count_put_off(NOW, WORK_STAGES)),
    ("work: claim and release a call", _claim),
    ("work: cards of earlier calls first", lambda s: s.older_cards_waiting(Delivery(call_id=10**9), NOW)),
    ("work: lead fields of a newer call", lambda s: s.newer_lead_write(7001, NOW - DAY, 1)),
    ("work: a worker's claims given back", lambda s: s.release_owner("1:worker-1")),
    ("start: release all claims", lambda s: s.release_all_claims()),
    ("fleet: missed alerts today", lambda s: s.missed_alerted_since(NOW - DAY)),
    ("status", lambda s: status(s, lambda line: None, None, NOW)),
    ("/find цена доставка", lambda s: s.find_calls("цена доставка")),
    ("/find заказ 4242", lambda s: s.find_calls("заказ 4242")),
    ("export, whole history (csv)", _export),
    # The bot's `/find` by number and `forget --phone` (its hash finds the calls it cleared).
    ("/find 89161234567", lambda s: s.calls_with_number(key, key("89161234567"))),
    ("/find 8 999 000-12-34", lambda s: s.calls_with_number(key, key("8 999 000-12-34"), "forgotten-hash")),
]
