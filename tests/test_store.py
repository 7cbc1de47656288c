"""The store: migrations, the atomic window, and that errors are errors; on SQLite and on
PostgreSQL (tests/databases.py)."""

from __future__ import annotations

import peewee
import pytest

from salesbot_poller.domain import CallEvent
from salesbot_poller.store import MIGRATIONS, Call, Migration, SeenEvent, Store, add_missing_columns

pytestmark = pytest.mark.postgres  # each test runs against SQLite and against PostgreSQL


def event(n: int) -> CallEvent:
    return CallEvent(f"01E{n:023d}", "in", "leads", 7000 + n, 100 + n, 1_700_000_000 + n)


def test_an_empty_database_is_migrated_once_and_recorded(database_url: str) -> None:
    url = database_url.replace("/state/", "/nested/dir/")  # SQLite: the directories are made
    store = Store.open(url, 1)
    assert [m.name for m in Migration.select()] == [name for name, _ in MIGRATIONS]
    assert store.migrate(2) == [], "applied migrations are not applied again"
    store.close()
    again = Store.open(url, 3)
    assert [m.applied_at for m in Migration.select()] == [1] * len(MIGRATIONS)
    again.close()


def test_record_window_dedups_and_moves_the_cursor_atomically(database_url: str) -> None:
    store = Store.open(database_url, 1)
    assert store.record_window([event(1), event(2)], [("01BAD", "field 'id'", None)], until=500, now=10) == (
        2,
        [("01BAD", "field 'id'")],
    )
    assert store.record_window([event(2), event(3)], [("01BAD", "field 'id'", None)], until=600, now=20) == (1, [])
    assert store.cursor() == 600 and Call.select().count() == 3 and SeenEvent.select().count() == 4


def test_a_failed_window_leaves_cursor_and_events_untouched(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store.open(database_url, 1)
    store.record_window([event(1)], [], until=500, now=10)

    def broken(*args: object, **kwargs: object) -> None:
        raise peewee.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "set_state", broken)
    with pytest.raises(peewee.OperationalError):
        store.record_window([event(2)], [], until=600, now=20)
    monkeypatch.undo()
    assert store.cursor() == 500 and Call.select().count() == 1, "rolled back as a whole"


def test_add_missing_columns_adds_only_absent_columns_and_keeps_rows(database_url: str) -> None:
    store = Store.open(database_url, 1)
    store.record_window([event(1)], [], until=500, now=10)
    store.db.execute_sql('ALTER TABLE "call" DROP COLUMN "notified_at"')  # an older schema
    add_missing_columns(store.db, Call, ["notified_at", "transcript"])  # transcript is already there
    add_missing_columns(store.db, Call, ["notified_at"])  # and running twice is harmless
    columns = [c.name for c in store.db.get_columns("call")]
    assert columns.count("notified_at") == 1 and columns.count("transcript") == 1
    assert Call.get().event_id == event(1).event_id
