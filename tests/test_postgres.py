"""What only PostgreSQL has, against a real server (tests/databases.py): the
advisory run lock, claims that skip a row another session holds, a lost connection, schemas
as instances, read-only reads, concurrent migrations, and the URL's password in no output."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote

import peewee
import pytest

from salesbot_poller.domain import CallEvent, Stage
from salesbot_poller.errors import FatalError
from salesbot_poller.pipeline.recovery import exclusive
from salesbot_poller.store import Call, Migration, Store
from salesbot_poller.store.postgres import LOCK_SPACE, open_postgres, transient
from tests.conftest import Servers, assert_no_secret, run_cli
from tests.databases import fresh_postgres, password
from tests.fakes import make_mp3
from tests.test_daemon import wait_for
from tests.test_privacy_retention import NUMBER, config_with, seed_forget

pytestmark = pytest.mark.postgres

# Holds the run lock of $URL, says so, and waits to be killed.
HOLDER = """
import os, sys, time
from salesbot_poller.pipeline.recovery import exclusive
with exclusive(os.environ["URL"]):
    print("held", flush=True)
    time.sleep(600)
"""
MIGRATOR = "import os; from salesbot_poller.store import Store; Store.open(os.environ['URL'], 1).close()"


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres() as url:
        yield url


def event(n: int) -> CallEvent:
    return CallEvent(f"01E{n:023d}", "in", "leads", 7000 + n, 100 + n, 1_700_000_000 + n)


def ready_calls(store: Store, n: int) -> None:
    store.record_window([event(i) for i in range(1, n + 1)], [], until=1, now=1)
    Call.update(stage=Stage.READY.value, kind="conversation").execute()


def run_locks(url: str) -> int:
    """How many sessions hold one of our run locks in `url`'s database."""
    admin = open_postgres(url)
    try:
        query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND granted"
        return int(admin.execute_sql(query, (LOCK_SPACE,)).fetchone()[0])
    finally:
        admin.close()


@pytest.mark.slow
def test_a_second_run_is_refused_while_one_holds_the_lock_and_the_lock_dies_with_its_process(pg_url: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True, env=os.environ | {"URL": pg_url}
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(FatalError, match="another salesbot-poller") as refused, exclusive(pg_url):
            pass
        assert password() not in str(refused.value) and ":***@" in str(refused.value)
        holder.kill()  # as kill -9: no unlock runs; the server ends the session
        holder.wait(timeout=20)
    finally:
        holder.kill()
    wait_for(lambda: run_locks(pg_url) == 0)
    with exclusive(pg_url):
        assert run_locks(pg_url) == 1
    assert run_locks(pg_url) == 0, "released at the end of the block"


def test_two_schemas_of_one_database_are_two_instances(pg_url: str) -> None:
    admin = open_postgres(pg_url)
    for schema in ("tenant_a", "tenant_b"):
        admin.execute_sql(f"CREATE SCHEMA {schema}")
    admin.close()
    a, b = (f"{pg_url}?options={quote('-csearch_path=' + schema)}" for schema in ("tenant_a", "tenant_b"))
    with exclusive(a), exclusive(b), pytest.raises(FatalError), exclusive(a):  # each its own lock, once
        pass
    store = Store.open(a, 1)
    store.record_window([event(1)], [], until=5, now=5)
    store.close()
    store = Store.open(b, 1)
    try:
        assert Call.select().count() == 0, "tenant_b has tables of its own"
        assert "call" in store.db.get_tables(schema="tenant_a") and "call" not in store.db.get_tables(schema="public")
    finally:
        store.close()


def test_a_claim_skips_a_call_that_another_session_has_locked(pg_url: str) -> None:
    store = Store.open(pg_url, 0)
    ready_calls(store, 2)
    other = open_postgres(pg_url)
    try:
        with other.atomic():
            other.execute_sql('SELECT id FROM "call" WHERE id = 1 FOR UPDATE')  # a worker mid-claim
            store.db.execute_sql("SET lock_timeout = '20s'")  # a claim that queued for the lock would fail here
            claimed = store.claim_next("w1", 10, [Stage.READY], "conversation")
            assert claimed is not None and claimed.id == 2, "the locked row is skipped, not waited for"
        again = store.claim_next("w2", 10, [Stage.READY], "conversation")
        assert again is not None and again.id == 1 and again.claimed_by == "w2"
        assert store.claim_next("w3", 10, [Stage.READY], "conversation") is None
    finally:
        other.close()
        store.close()


def _lose_connection(store: Store, url: str) -> None:
    """End the store's connection from the server's side (a restart, a failover) and wait
    until the server has let it go."""
    pid = store.db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    admin = open_postgres(url)
    try:
        admin.execute_sql("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(lambda: admin.execute_sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is None)
    finally:
        admin.close()


def test_a_must_keep_write_is_written_again_after_the_connection_was_lost(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store.open(pg_url, 0)
    try:
        ready_calls(store, 1)
        call = Call.get_by_id(1)
        _lose_connection(store, pg_url)
        with caplog.at_level(logging.WARNING):
            store.committed(lambda: store.update(call, 5, last_error="kept"), patience=30)
        assert Call.get_by_id(1).last_error == "kept"
        assert "written again" in caplog.text and "\n\t" not in caplog.text, "one line per retry"

        _lose_connection(store, pg_url)
        with pytest.raises(peewee.OperationalError):  # an ordinary write: the error propagates ...
            store.update(call, 6, last_error="lost")
        store.update(call, 7, last_error="next")  # ... and the next statement has a new connection
        assert Call.get_by_id(1).last_error == "next"
    finally:
        store.close()


def test_a_server_that_is_down_or_starting_is_worth_another_try_and_a_bad_query_is_not() -> None:
    for text in (
        'connection to server at "127.0.0.1", port 5432 failed: Connection refused',
        'connection to server at "127.0.0.1", port 5432 failed: FATAL:  the database system is starting up',
        "FATAL:  the database system is not yet accepting connections",
        "server closed the connection unexpectedly",
    ):
        assert transient(peewee.OperationalError(text)), text
    assert not transient(peewee.ProgrammingError('relation "nope" does not exist'))
    assert not transient(peewee.OperationalError("password authentication failed for user"))


def test_a_read_only_store_writes_nothing(pg_url: str) -> None:
    Store.open(pg_url, 0).close()
    reader = Store.open_readonly(pg_url)
    try:
        assert reader.missing_migrations() == []
        with pytest.raises(peewee.DatabaseError, match="read-only transaction"):
            reader.set_state("written", "yes")
        assert reader.get_state("written") is None
    finally:
        reader.close()


@pytest.mark.slow
def test_processes_starting_at_once_migrate_one_after_the_other(pg_url: str) -> None:
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATOR], stderr=subprocess.PIPE, text=True, env=os.environ | {"URL": pg_url}
        )
        for _ in range(4)
    ]
    errors = [starter.communicate(timeout=60)[1] for starter in starters]
    assert [starter.returncode for starter in starters] == [0] * 4, errors
    store = Store.open(pg_url, 2)
    try:
        assert store.missing_migrations() == [] and store.migrate(3) == []
        assert {m.applied_at for m in Migration.select()} == {1}, "all applied by the first start"
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql"])
def test_the_database_password_is_never_printed(servers: Servers) -> None:
    secret = password()
    now = int(time.time())
    big = 2**40  # amoCRM ids past 2^31 go through the whole pipeline
    servers.amo.add_entity("lead", big, "ООО Ромашка", 555)
    servers.amo.add_call(
        entity_id=big,
        note_id=big + 1,
        duration=60,
        phone="+79991110001",
        link=servers.recordings.add("/r/1.mp3", make_mp3(1.0)),
        created_at=now - 60,
        responsible_user_id=555,
    )
    config = servers.write_config()
    month = datetime.now(UTC).strftime("%Y-%m")
    results = {
        " ".join(args): run_cli(*args, config=config)
        for args in (
            ("check",),
            ("--log-level", "DEBUG", "once"),
            ("status",),
            ("retry", "--failed"),
            ("usage", "--month", month),
        )
    }
    check, once, status = results["check"], results["--log-level DEBUG once"], results["status"]
    assert check.returncode == 0 and f"database {servers.database.replace(secret, '***')})" in check.stdout
    assert once.returncode == 0 and "notified=1" in once.stderr, once.stderr
    assert status.returncode == 0 and "notified        1" in status.stdout
    assert len(servers.telegram.messages) == 1

    with exclusive(servers.database):
        refused = run_cli("once", config=config)
    assert refused.returncode == 3 and "another salesbot-poller" in refused.stderr

    (servers.tmp / "fleet" / "acme").mkdir(parents=True)
    (servers.tmp / "fleet" / "acme" / "config.toml").write_text(config.read_text())
    fleet = run_cli("fleet", "status", "--root", str(servers.tmp / "fleet"))
    assert fleet.returncode == 0 and fleet.stdout.startswith("acme: 127.0.0.1; last cycle"), fleet.stdout

    wrong = servers.tmp / "wrong.toml"
    wrong.write_text(config.read_text().replace(f":{secret}@", ":not-the-password-0451@"))
    denied = run_cli("status", config=wrong)
    assert denied.returncode == 3 and len(denied.stderr.strip().splitlines()) == 1, denied.stderr
    assert "database error" in denied.stderr and "password authentication failed" in denied.stderr

    outputs = [
        text for result in [*results.values(), refused, fleet, denied] for text in (result.stdout, result.stderr)
    ]
    assert all(secret not in text for text in outputs), "the database password was printed"
    assert all("not-the-password-0451" not in text for text in outputs)
    assert_no_secret(*outputs)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql"])
def test_forget_clears_a_number_and_records_its_deletions_once(servers: Servers) -> None:
    """`forget` reads then writes delivery rows (their deleted ids) with the rows locked."""
    seed_forget(servers, int(time.time()))
    config = config_with(servers, delete=True)
    assert run_cli("once", config=config).returncode == 0
    first = run_cli("forget", "--phone", NUMBER, "--yes", config=config)
    assert first.returncode == 0, first.stderr
    assert "2 call(s) cleared" in first.stdout and "Telegram message(s) deleted" in first.stdout
    deleted = list(servers.telegram.deleted)
    assert deleted, "the bot's recent messages about the number went"
    second = run_cli("forget", "--phone", NUMBER, "--yes", config=config)
    assert second.returncode == 0 and "nothing left to remove" in second.stdout, second.stdout
    assert servers.telegram.deleted == deleted, "nothing is tried twice"
    status = run_cli("status", config=config)
    assert "calls without personal data (retention or forget): 2" in status.stdout
    assert_no_secret(first.stdout, first.stderr, second.stdout, status.stdout)
