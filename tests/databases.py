"""The databases the tests run against: SQLite always; PostgreSQL too for the tests marked
`postgres` (the end-to-end, chaos, migration and store tests), each of which then runs once
per backend (`[sqlite]`, `[postgresql]`).

A PostgreSQL variant gets a database of its own, created for it and dropped after it, on the
server that `SALESBOT_TEST_POSTGRES` names (a role allowed to create databases; `.ci/postgres.sh`
makes one and prints the URL). Without that variable the variants are skipped, except under
CI (`CI` set and not "false"), where they fail: CI must never pass by not testing PostgreSQL.
A server that cannot be reached fails them everywhere.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import peewee
import pytest

from salesbot_poller.store.postgres import open_postgres

ENV = "SALESBOT_TEST_POSTGRES"
BACKENDS = ("sqlite", "postgresql")


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def server_url() -> str:
    """The URL of the test server's own database (skips or fails without one: see above)."""
    url = os.environ.get(ENV, "")
    if not url:
        why = f"{ENV} is not set (start a server with .ci/postgres.sh: docs/contributing.md)"
        if under_ci():
            pytest.fail(f"CI must test PostgreSQL too: {why}")
        pytest.skip(why)
    return url


def password() -> str:
    """The test server's password (tests assert it is never printed)."""
    return urlsplit(server_url()).password or ""


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new, empty database on the test server for the block; its URL. Dropped after, even
    with connections still open (a daemon the test killed, the test's own store)."""
    base = server_url()
    name = f"salesbot_t_{uuid.uuid4().hex[:16]}"
    admin = open_postgres(base)
    admin.execute_sql(f'CREATE DATABASE "{name}"')  # type: ignore[no-untyped-call]
    try:
        yield with_database(base, name)
    finally:
        _drop(admin, name)
        admin.close()


def _drop(admin: peewee.Database, name: str) -> None:
    """Drops the database; retried for a while when an autovacuum worker in it could not be
    ended (a server whose test role lacks pg_signal_backend)."""
    for attempt in range(20):
        try:
            admin.execute_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[no-untyped-call]
            return
        except peewee.DatabaseError:
            if attempt == 19:
                raise
            time.sleep(0.5)
