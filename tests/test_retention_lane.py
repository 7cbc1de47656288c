"""Retention in a lane of its own (issue 29): batches by an indexed keyset that never reads a
call already cleared, a time budget per run, progress in `status`, and a missed call alerted
within the poll interval while a pass clears a large history."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import peewee
import pytest

from salesbot_poller.cli import commands
from salesbot_poller.cli.daemon import Daemon
from salesbot_poller.lanes import intake
from salesbot_poller.pipeline import retention
from salesbot_poller.pipeline.context import App
from salesbot_poller.store import Call, Store
from tests.builder import Rig, already_running, build_rig
from tests.conftest import Servers
from tests.fakes.base import form_params
from tests.loopback_app import ts
from tests.test_daemon import wait_for

DAY = 24 * 3600
NOW = ts(0)
ANALYSIS = json.dumps({"summary": "Разговор", "topic": "цена", "score": 50, "rubric": []})


def seed_old_calls(store: Store, count: int, start: int, spacing: int, first: int = 0, page: int = 1000) -> None:
    """`count` delivered calls holding personal data, one every `spacing` seconds from `start`,
    written in bulk through the store's models (`insert_many`, one transaction per page)."""
    for offset in range(0, count, page):
        rows = [
            {
                "event_id": f"old-{n}",
                "direction": "in",
                "entity_type": "leads",
                "entity_id": 7000 + n % 997,
                "note_id": 500_000 + n,
                "event_created_at": start + (n - first) * spacing,
                "first_seen_at": start + (n - first) * spacing,
                "updated_at": start + (n - first) * spacing + 120,
                "stage": "notified",
                "kind": "conversation",
                "duration": 60 + n % 300,
                "phone": f"+7999{n:07d}",
                "entity_name": f"ООО Ромашка-{n}",
                "transcript": f"Менеджер: добрый день. Клиент: это {n}.",
                "analysis_json": ANALYSIS,
            }
            for n in range(first + offset, first + min(offset + page, count))
        ]
        with store.db.atomic():
            for chunk in peewee.chunked(rows, 100):
                Call.insert_many(chunk).execute()


def cleared() -> int:
    return int(Call.select().where(Call.personal_removed_at.is_null(False)).count())


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = build_rig(tmp_path, storage={"retention_days": 30})
    yield rig
    rig.app.store.close()


class Reads:
    """The calls `calls_to_clear` handed out, batch by batch, and the keyset each began after."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.after: list[tuple[int, int]] = []

    def watch(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        real = store.calls_to_clear

        def recorded(before: int, limit: int, after: tuple[int, int] = (-1, 0)) -> list[Call]:
            found = real(before, limit, after)
            self.after.append(after)
            self.batches.append([int(call.id) for call in found])
            return found

        monkeypatch.setattr(store, "calls_to_clear", recorded)

    def ids(self) -> list[int]:
        return [call_id for batch in self.batches for call_id in batch]


def test_a_run_stops_at_its_budget_and_the_next_one_goes_on_from_the_keyset_after_a_restart(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "BATCH", 10)
    monkeypatch.setattr(retention, "MIN_PAUSE_SECONDS", 0.0)
    seed_old_calls(rig.app.store, 25, NOW - 60 * DAY, 3600)  # 40 to 59 days old: all due
    seed_old_calls(rig.app.store, 5, NOW - 5 * DAY, 3600, first=100)  # recent: kept
    reads = Reads()
    reads.watch(rig.app.store, monkeypatch)
    ticks = iter(range(1000))  # each look at the clock is one second: the budget allows one batch

    first = retention.run(rig.app, NOW, budget=1.5, clock=lambda: float(next(ticks)))

    assert first is None and cleared() == 10
    going = retention.under_way(rig.app.store.get_state(retention.PASS_KEY))
    assert going is not None and (going.calls, going.due, going.cutoff) == (10, 25, NOW - 30 * DAY)
    tenth = Call.get_by_id(reads.batches[0][-1])
    assert (going.after_at, going.after_id) == (tenth.event_created_at, tenth.id)
    lines: list[str] = []
    commands.status(rig.app.store, lines.append, rig.app.config, now=NOW + 60)
    assert any(
        "pass under way since 2026-11-25 09:00 UTC: 10 of ~25 old call(s) cleared" in line and "continuing" in line
        for line in lines
    ), lines

    rig.app.store.close()  # a restart
    rig.app.store = Store.open(rig.app.config.storage.database, NOW + 120)
    reads.watch(rig.app.store, monkeypatch)
    done = retention.run(rig.app, NOW + 120, budget=None)

    assert done is not None and (done.calls, done.due) == (25, 25) and cleared() == 25
    assert reads.after[1] == (tenth.event_created_at, tenth.id), "the second run began past the first's last call"
    assert len(reads.ids()) == len(set(reads.ids())) == 25, "no call was read twice"
    assert retention.under_way(rig.app.store.get_state(retention.PASS_KEY)) is None
    assert retention.run(rig.app, NOW + 180) is None, "once a day"

    # Stored late (a backfill), older than every call cleared: a new pass starts from the beginning.
    seed_old_calls(rig.app.store, 3, NOW - 70 * DAY, 60, first=200)
    before = len(reads.ids())
    tomorrow = retention.run(rig.app, NOW + DAY)
    assert tomorrow is not None and tomorrow.calls == 3 and cleared() == 28
    assert len(reads.ids()[before:]) == 3, "tomorrow's pass reads no call cleared before"


def selects(app: App, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[object, ...]]]:
    """A list that the SELECT statements `app`'s store sends from now on are added to."""
    db = app.store.db
    sent: list[tuple[str, tuple[object, ...]]] = []
    execute = db.execute_sql

    def recorded(sql: str, params: tuple[object, ...] | None = None, *args: object) -> object:
        if sql.lstrip().upper().startswith("SELECT"):
            sent.append((sql, tuple(params or ())))
        return execute(sql, params, *args)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(db, "execute_sql", recorded)
    return sent


def test_every_read_of_a_retention_run_is_served_by_an_index(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's plan of each statement a run sends: the calls by the partial index of those
    still holding personal data (a cleared call is not in it), never a scan of `call`."""
    monkeypatch.setattr(retention, "BATCH", 50)
    seed_old_calls(rig.app.store, 300, NOW - 400 * DAY, 3600)
    Call.update(personal_removed_at=NOW - DAY).where(Call.id <= 200).execute()  # cleared by yesterday's pass
    sent = selects(rig.app, monkeypatch)
    done = retention.run(rig.app, NOW)
    assert done is not None and done.calls == done.due == 100
    db = rig.app.store.db
    explain = db.execute_sql  # the recorder: it keeps only SELECTs
    plans = {
        sql: " / ".join(row[3] for row in explain("EXPLAIN QUERY PLAN " + sql, params).fetchall())
        for sql, params in sent
    }
    on_calls = {sql: plan for sql, plan in plans.items() if re.search(r'FROM "call"', sql)}
    assert any("personal_removed_at" in sql for sql in on_calls)
    for sql, plan in on_calls.items():
        assert not re.search(r"\bSCAN (call|t\d)\b", plan), f"a full scan of call: {plan} for {sql}"
        if "personal_removed_at" in sql:
            assert "call_retention_due" in plan, f"{plan} for {sql}"
    unlinked = [plan for sql, plan in plans.items() if 'FROM "delivery"' in sql and '"removed_at" IS NULL' in sql]
    assert unlinked and all("delivery_retention_due" in plan for plan in unlinked), unlinked


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_walks_the_keyset_on_the_partial_index(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL's plan (statistics fresh): the batch's keyset is the index condition of
    `call_retention_due`, which holds only the calls still holding personal data."""
    monkeypatch.setattr(retention, "BATCH", 50)
    rig = build_rig(tmp_path, storage={"database": database_url, "retention_days": 30})
    try:
        seed_old_calls(rig.app.store, 3000, NOW - 400 * DAY, 3600)
        Call.update(personal_removed_at=NOW - DAY).where(Call.id <= 2700).execute()  # cleared by yesterday's pass
        db = rig.app.store.db
        # Statistics, and the visibility map an index-only count needs (autovacuum's work).
        db.execute_sql("VACUUM ANALYZE call")  # type: ignore[no-untyped-call]
        sent = selects(rig.app, monkeypatch)
        done = retention.run(rig.app, NOW)
        assert done is not None and done.calls == done.due == 300
        keyset = [(sql, params) for sql, params in sent if '"personal_removed_at" IS NULL' in sql]
        assert len(keyset) >= 7  # the count, then a batch after each keyset
        for sql, params in keyset:
            rows = db.execute_sql("EXPLAIN " + sql, params).fetchall()  # type: ignore[no-untyped-call]
            plan = "\n".join(row[0] for row in rows)
            assert "call_retention_due" in plan and "Seq Scan" not in plan, plan
    finally:
        rig.app.store.close()


def test_the_intake_pass_leaves_retention_to_its_own_lane(rig: Rig) -> None:
    already_running(rig.app)
    seed_old_calls(rig.app.store, 3, NOW - 60 * DAY, 3600)
    intake(rig.app, NOW)
    assert cleared() == 0 and rig.app.store.get_state(retention.STATE_KEY) is None
    assert retention.run(rig.app, NOW) is not None and cleared() == 3


INTERVAL = 1.0  # the loopback config's poller.interval_seconds


def passed(store: Store) -> int:
    """Calls the pass under way has cleared so far (0 before it starts)."""
    going = retention.under_way(store.get_state(retention.PASS_KEY))
    return 0 if going is None else going.calls


@pytest.mark.slow
def test_a_missed_call_is_alerted_within_the_interval_while_retention_clears_100k_old_calls(servers: Servers) -> None:
    servers.write_config()  # the database's directory
    started = datetime.now(UTC)
    rig = build_rig(
        servers.config_text(), real_source=True, real_notifier=True, now=started, storage={"retention_days": 30}
    )
    store = rig.app.store
    now = int(started.timestamp())
    seed_old_calls(store, 100_000, now - 400 * DAY, 300)  # ~350 days of history, all past 30 days
    already_running(rig.app, started - timedelta(minutes=2))
    daemon = Daemon(rig.app, lambda: datetime.now(UTC))
    scheduler = daemon.scheduler(datetime.now(UTC))  # the lanes' jobs as `run` schedules them
    scheduler.start()
    try:
        wait_for(lambda: passed(store) >= 2 * retention.BATCH, timeout=60)  # the first pass is under way
        before = passed(store)
        readable = time.monotonic()  # the fakes stamp requests with this clock
        servers.amo.add_call(  # created 10 s ago: past the poller's settle delay, readable now
            entity_id=7200, note_id=200, duration=0, phone="+79992000000", link=None, created_at=int(time.time()) - 10
        )
        wait_for(lambda: any("+7 999 200-00-00" in m["text"] for m in servers.telegram.messages), timeout=30)
        (alert,) = [
            r.at for r in servers.telegram.requests_to("sendMessage") if "+7 999 200-00-00" in form_params(r)[0]["text"]
        ]
        wait_for(lambda: passed(store) >= before + 4 * retention.BATCH, timeout=30)  # and it goes on
        after = passed(store)
    finally:
        daemon.stop.set()
        scheduler.shutdown(wait=True)
        store.close()
    print(
        f"\nmissed-call alert {alert - readable:.2f} s after its event became readable; "
        f"retention cleared {after - before} calls meanwhile, {after} of 100000 so far"
    )
    assert alert - readable < INTERVAL + 2.0, "the alert waited for retention"
    assert after < 100_000, "the pass was still under way"


def test_the_retention_jobs_errors_are_logged_once_while_they_repeat_and_touch_no_other_lane(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = Daemon(rig.app, lambda: datetime.fromtimestamp(NOW, UTC))
    failures = [peewee.OperationalError("database is locked")] * 2

    def run(*args: object, **kwargs: object) -> None:
        if failures:
            raise failures.pop()

    monkeypatch.setattr(retention, "run", run)
    with caplog.at_level(logging.DEBUG, logger="salesbot_poller.cli.daemon"):
        for _ in range(3):
            daemon.retention_job()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["retention: database is locked; tried again in 120 s"]
    assert "retention works again" in caplog.text
    assert daemon.progress.idle.is_set() and daemon.app.health.count == 0 and not daemon.stop.is_set()
