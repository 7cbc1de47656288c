"""`/find <number>` and `forget --phone` read one number's calls in an index of the
number's normal form (`call.phone_key`, 0024_phone_key), however long the history: the key
is written with the number (intake), goes with it (retention, `forget`), is never another
number's, and a database upgraded from before the step finds its calls by any written form
of their number."""

from __future__ import annotations

from pathlib import Path

import peewee
import pytest

from salesbot_poller.phones import key
from salesbot_poller.pipeline import retention
from salesbot_poller.store import Call, Store
from salesbot_poller.store.base import insert_rows
from tests.call_history import analyze, seed_history
from tests.loopback_app import ts
from tests.plans import NOW, captured, plan
from tests.test_migrations import back_to
from tests.test_privacy_retention import by_entity, seeded

FORMS = ("79161234567", "8 (916) 123-45-67", "+7 916 123-45-67")


def _call(n: int, phone: str | None, **fields: object) -> dict[str, object]:
    """A call as a release before 0024_phone_key stored it (no key)."""
    at = 1_700_000_000 + n * 60
    row = {
        "event_id": f"old-{n}",
        "direction": "in",
        "entity_type": "leads",
        "entity_id": 7000 + n,
        "note_id": 100 + n,
        "event_created_at": at,
        "first_seen_at": at,
        "updated_at": at,
        "stage": "notified",
        "kind": "conversation",
        "phone": phone,
    }
    return row | fields


@pytest.mark.postgres
def test_an_upgraded_database_finds_each_call_by_any_form_of_its_number(database_url: str) -> None:
    store = Store.open(database_url, 1)
    try:
        back_to(store, "0023_retention_keyset")
        assert "phone_key" not in {column.name for column in store.db.get_columns("call")}
        # Inserted by name, without the key column the release did not have.
        rows = [_call(n, phone) for n, phone in enumerate(reversed(FORMS))]
        rows += [_call(3, "+7 916 765-43-21"), _call(4, None), _call(5, "доб. 12")]
        insert_rows(store.db, Call, rows)
        store.migrate(2)
        assert store.missing_migrations() == []

        for form in FORMS:  # oldest first, whichever form is asked
            assert [c.event_id for c in store.calls_with_number(key, key(form))] == ["old-0", "old-1", "old-2"]
        assert [c.event_id for c in store.calls_with_number(key, "79167654321")] == ["old-3"]
        assert [c.event_id for c in store.calls_with_number(key, "12")] == ["old-5"]  # an extension's digits
        keyed = dict(Call.select(Call.event_id, Call.phone_key).tuples())
        assert keyed == {
            "old-0": "79161234567",
            "old-1": "79161234567",
            "old-2": "79161234567",
            "old-3": "79167654321",
            "old-4": None,
            "old-5": "12",
        }, "the first look-up filled every key"
        assert store.fill_phone_keys(key) == 0, "nothing is left to fill"
    finally:
        store.close()


def test_the_key_is_filled_page_by_page_and_never_for_a_number_gone(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path}/salesbot.db", 1)
    try:
        insert_rows(store.db, Call, [_call(n, f"8 916 000-00-{n:02d}") for n in range(25)])
        assert store.fill_phone_keys(key, page=10) == 25
        assert store.fill_phone_keys(key, page=10) == 0
        assert Call.get(Call.event_id == "old-7").phone_key == "79160000007"

        call = Call.get(Call.event_id == "old-8")
        store.update(call, 2, phone="+7 916 111-22-33")  # written without its key: the old one goes
        assert Call.get_by_id(call.id).phone_key is None
        assert [c.event_id for c in store.calls_with_number(key, "79161112233")] == ["old-8"]
        assert store.calls_with_number(key, "79160000008") == []

        store.clear_personal([Call.get(Call.event_id == "old-9")], 3, "forgotten")
        assert Call.get(Call.event_id == "old-9").phone_key is None
        assert store.calls_with_number(key, "79160000009") == []
    finally:
        store.close()


def test_intake_writes_the_key_and_retention_clears_it(tmp_path: Path) -> None:
    rig = seeded(tmp_path)  # four calls read by the real intake from the loopback amoCRM
    store = rig.app.store
    assert by_entity(7001).phone_key == "79991110001"  # written "+7 (999) 111-00-01"
    assert by_entity(7004).phone_key == "79991110004"
    assert store.fill_phone_keys(key) == 0, "intake left no key to fill"
    assert [c.entity_id for c in store.calls_with_number(key, "79991110001")] == [7001]

    retention.run(rig.app, ts(0))

    assert (by_entity(7001).phone, by_entity(7001).phone_key) == (None, None)
    assert (by_entity(7002).phone, by_entity(7002).phone_key) == (None, None)
    assert by_entity(7003).phone_key == "79991110003"  # recent: kept
    assert store.calls_with_number(key, "79991110001") == []


def test_a_number_changed_while_its_key_is_computed_keeps_no_key(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path}/salesbot.db", 1)
    try:
        insert_rows(store.db, Call, [_call(0, "8 916 123-45-67")])

        def meanwhile(phone: str | None) -> str:  # the number cleared between read and write
            Call.update(phone=None).execute()
            return key(phone)

        store.fill_phone_keys(meanwhile)
        assert Call.get().phone_key is None, "no key of a number the call no longer has"
        assert store.calls_with_number(key, "79161234567") == []
    finally:
        store.close()


@pytest.mark.postgres
def test_the_look_up_and_the_check_for_keys_to_fill_read_their_indexes(database_url: str) -> None:
    """Not only no full scan (tests/test_query_plans.py): once the keys are filled, neither
    read walks the primary key past every call either (PostgreSQL's plan of the check for
    keys to fill did, filtering each row, before `call_phone_unkeyed`). While a fill is
    under way the planner may walk the ids instead: the calls after the keyset are then
    mostly the ones to fill."""
    store = Store.open(database_url, NOW)
    try:
        seed_history(store, 2000, NOW)  # numbers without keys, as an upgraded database has them
        assert store.fill_phone_keys(key) == 1600  # the oldest fifth's numbers are cleared
        if isinstance(store.db, peewee.PostgresqlDatabase):
            store.db.execute_sql("SET enable_seqscan = off")
        for statistics in ("as left", "analysed"):
            if statistics == "analysed":
                analyze(store)
            with captured() as statements:
                store.calls_with_number(key, key("8 999 000-12-34"))
            reads = [(sql, params) for sql, params in statements if sql.startswith("SELECT") and "phone_key" in sql]
            assert len(reads) == 2, "the check for keys to fill, and the look-up"
            for sql, params in reads:
                lines = " / ".join(plan(store.db, sql, params))
                assert "call_phone_key" in lines or "call_phone_unkeyed" in lines, f"{statistics}: {lines} for {sql}"
    finally:
        store.close()


def test_the_retention_job_keys_the_calls_stored_before_the_keys(tmp_path: Path) -> None:
    rig = seeded(tmp_path)
    Call.update(phone_key=None).execute()  # as an upgrade leaves them
    retention.run(rig.app, ts(0))
    assert by_entity(7003).phone_key == "79991110003", "keyed in the background, not by the first /find"
    assert rig.app.store.fill_phone_keys(key) == 0
