"""Migrations 0006_delivery and 0007_lanes from the previous schemas, a call caught mid-send
by the upgrade, and a delivery row's claim (one sender at a time)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from salesbot_poller.domain import Planned
from salesbot_poller.lanes import run_once
from salesbot_poller.store import Call, Delivery, Migration, Store
from tests.conftest import CHAT_ID, Servers
from tests.loopback_app import at, calls, loopback_rig


def test_a_database_of_the_previous_schema_gets_the_new_columns_and_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    store = Store.open(url, 1)
    for column in ("chat_id", "thread_id", "callback_call_id"):
        store.db.execute_sql(f'ALTER TABLE "call" DROP COLUMN "{column}"')
    store.db.drop_tables([Delivery])
    Migration.delete().where(Migration.name == "0006_delivery").execute()
    store.close()
    again = Store.open(url, 2)
    columns = {c.name for c in again.db.get_columns("call")}
    assert {"chat_id", "thread_id", "callback_call_id"} <= columns and again.db.table_exists("delivery")
    assert again.migrate(3) == []
    again.close()


def old_call(event_id: str, **fields: object) -> Call:
    """A call row as the previous version left it, five minutes before `at(0)`."""
    seen = at(-5).timestamp()
    return Call.create(
        event_id=event_id,
        direction="in",
        entity_type="leads",
        entity_id=1,
        note_id=1,
        event_created_at=seen,
        first_seen_at=seen,
        updated_at=seen,
        **fields,
    )


def upgrade_to_lanes(store: Store) -> None:
    """Apply 0007_lanes again, as an upgrade from the version before it would."""
    Migration.delete().where(Migration.name == "0007_lanes").execute()
    assert store.migrate(int(at(0).timestamp())) == ["0007_lanes"]


def test_a_call_left_mid_send_by_the_previous_version_finishes_in_the_default_chat(servers: Servers) -> None:
    app = loopback_rig(servers).app
    call = old_call(
        "01OLD",
        stage="notifying",
        kind="conversation",
        outbox_json=json.dumps(["<b>part 1</b>", "<b>part 2</b>"]),
        message_ids_json="[41]",
    )
    done = old_call(
        "01DONE", stage="missed_alerted", kind="missed", outbox_json='["<b>alert</b>"]', message_ids_json="[7]"
    )
    upgrade_to_lanes(app.store)
    own = app.store.find_delivery(f"call:{done.id}")
    assert own is not None and own.done_at is not None and json.loads(own.sent_ids_json) == [7], "a reply finds it"
    run_once(app, at(0))
    assert [m["text"] for m in servers.telegram.messages] == ["<b>part 2</b>"]
    assert servers.telegram.messages[0]["chat_id"] == CHAT_ID
    assert calls()[0].id == call.id and calls()[0].stage == "notified"
    assert app.store.pending() == [] and upgrade_to_lanes(app.store) is None, "a second run changes nothing"
    assert len(servers.telegram.messages) == 1


def test_a_call_analysed_by_the_previous_version_is_still_delivered(servers: Servers) -> None:
    app = loopback_rig(servers).app
    old = {
        "summary": "Клиент спросил цену",
        "score": 72,
        "went_well": ["Поздоровался"],
        "to_improve": ["Уточнить бюджет"],
        "objections": ["Дорого"],
        "next_step": "Отправить КП",
    }
    old_call(
        "01OLD2",
        stage="analysed",
        kind="conversation",
        duration=60,
        analysis_json=json.dumps(old, ensure_ascii=False),
    )
    run_once(app, at(0))
    (message,) = servers.telegram.messages
    assert "72/100" in message["visible_text"] and "Дорого → не отработано" in message["visible_text"]
    assert "Отправить КП" in message["visible_text"] and calls()[0].stage == "notified"


@pytest.mark.postgres
def test_a_delivery_row_has_one_sender_at_a_time(database_url: str) -> None:
    store = Store.open(database_url, 0)
    store.enqueue([Planned("call:1:amo_note", "amo_note", None, {"path": "/x", "body": []})], 1, 0)
    mine, theirs = store.find_delivery("call:1:amo_note"), store.find_delivery("call:1:amo_note")
    assert mine is not None and theirs is not None
    assert store.claim_delivery(mine, "worker", 10, lease=100)
    assert not store.claim_delivery(theirs, "intake", 20, lease=100), "claimed: the other lane leaves it"
    assert theirs.claimed_by == "worker", "and sees who holds it"
    assert store.claim_delivery(mine, "worker", 30, lease=100), "its owner may claim it again"
    store.update_delivery(mine, sent_ids_json="[7]")
    store.release_delivery(theirs, "intake")
    assert store.find_delivery("call:1:amo_note").claimed_by == "worker", "only its owner gives it back"  # type: ignore[union-attr]
    assert store.claim_delivery(theirs, "intake", 130, lease=100), "not renewed for a lease: taken back"
    assert theirs.sent_ids_json == "[7]", "read again: what the first sender recorded is seen"
    store.update_delivery(theirs, done_at=140)
    store.release_delivery(theirs, "intake")
    assert not store.claim_delivery(mine, "worker", 150, lease=100) and mine.done_at == 140, "sent: never again"
    store.enqueue([Planned("call:2:amo_note", "amo_note", None, {"path": "/x", "body": []})], 2, 0)
    other = store.find_delivery("call:2:amo_note")
    assert other is not None and store.claim_delivery(other, "worker", 160, lease=100)
    assert store.release_owner("worker") == 1 and store.release_all_claims() == 0
    store.close()
