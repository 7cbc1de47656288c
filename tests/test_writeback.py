"""amoCRM write-back through the real amoCRM client against the fake amoCRM: a note with the
summary, score and next step; a task for the next step; each exactly once, also while both
lanes find it unsent; opt-in."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from salesbot_poller.lanes import drain, intake, run_once
from salesbot_poller.store import Delivery
from tests.conftest import Servers
from tests.loopback_app import IVAN, add_call, at, calls, loopback_rig, ts
from tests.test_daemon import wait_for

NOTES = "/api/v4/leads/notes$"


def test_nothing_is_written_unless_asked(servers: Servers) -> None:
    rig = loopback_rig(servers)
    add_call(rig, 1)
    run_once(rig.app, at(0))
    assert servers.amo.created_notes == [] and servers.amo.tasks == []


def test_a_note_and_a_task_on_the_calls_entity_each_once(servers: Servers) -> None:
    rig = loopback_rig(servers, amocrm={"write_back": True, "create_tasks": True})
    add_call(rig, 1, entity="contacts", user=IVAN)
    run_once(rig.app, at(0))
    run_once(rig.app, at(10))
    (note,) = servers.amo.created_notes
    assert note["entity_plural"] == "contacts" and note["entity_id"] == 7001 and note["note_type"] == "common"
    text = note["params"]["text"]
    assert "оценка 50/100" in text and "Итог: Итог:" in text and "Следующий шаг: Отправить КП" in text
    (task,) = servers.amo.tasks
    assert task["entity_id"] == 7001 and task["entity_type"] == "contacts" and task["responsible_user_id"] == IVAN
    assert "Отправить КП" in task["text"]
    # No date was named: the end of the day after the call (23:59 in the account's zone, UTC here).
    assert datetime.fromtimestamp(task["complete_till"], UTC) == datetime(2026, 11, 26, 23, 59, tzinfo=UTC)
    assert calls()[0].stage == "notified"


def test_notes_only_without_create_tasks(servers: Servers) -> None:
    rig = loopback_rig(servers, amocrm={"write_back": True})
    add_call(rig, 1)
    run_once(rig.app, at(0))
    assert len(servers.amo.created_notes) == 1 and servers.amo.tasks == []


def test_a_failed_task_is_retried_without_writing_the_note_again(servers: Servers) -> None:
    rig = loopback_rig(servers, amocrm={"write_back": True, "create_tasks": True})
    servers.amo.fail_next("/api/v4/tasks", 502, "<html>Bad Gateway</html>")
    add_call(rig, 1)
    run_once(rig.app, at(0))
    assert len(servers.amo.created_notes) == 1 and servers.amo.tasks == []
    assert calls()[0].stage == "notified", "the card is out: a failing amoCRM write never holds the call"
    run_once(rig.app, at(10))
    assert len(servers.amo.created_notes) == 1 and len(servers.amo.tasks) == 1
    assert calls()[0].stage == "notified" and len(servers.telegram.messages) == 1


def test_a_refused_write_is_given_up_without_holding_the_call(servers: Servers) -> None:
    rig = loopback_rig(servers, amocrm={"write_back": True})
    servers.amo.fail_next("/api/v4/leads/notes", 400, {"title": "Bad Request", "status": 400})
    add_call(rig, 1)
    run_once(rig.app, at(0))
    assert calls()[0].stage == "notified" and servers.amo.created_notes == []


def test_a_named_due_date_is_the_end_of_that_day_in_the_accounts_zone() -> None:
    from zoneinfo import ZoneInfo

    from salesbot_poller.pipeline.writeback import due_timestamp

    moscow = ZoneInfo("Europe/Moscow")
    due = due_timestamp("2026-11-27", int(datetime(2026, 11, 25, 9, 0, tzinfo=UTC).timestamp()), moscow)
    assert datetime.fromtimestamp(due, moscow) == datetime(2026, 11, 27, 23, 59, tzinfo=moscow)


def test_a_token_that_may_not_write_does_not_stop_the_bot(servers: Servers) -> None:
    rig = loopback_rig(servers, amocrm={"write_back": True})
    servers.amo.fail_next("/api/v4/leads/notes", 403, "<html>Forbidden</html>", method="POST")
    add_call(rig, 1)
    run_once(rig.app, at(0))
    assert calls()[0].stage == "notified" and len(servers.telegram.messages) == 1
    (row,) = Delivery.select().where(Delivery.kind == "amo_note")
    assert row.done_at is not None and "403 on POST /api/v4/leads/notes" in (row.error or "")


@pytest.mark.slow
def test_a_note_amocrm_takes_3_s_to_accept_is_posted_once_while_both_lanes_find_it_unsent(servers: Servers) -> None:
    """The worker posts the note right after the card; amoCRM answers in 3 s; meanwhile the
    intake lane's pass over delivered calls' rows finds the same row unsent and due. The
    row's claim makes the worker its only sender: the intake lane leaves it alone."""
    rig = loopback_rig(servers, amocrm={"write_back": True})
    store = rig.app.store
    servers.amo.delay_next(NOTES, 3.0, times=2, method="POST")
    add_call(rig, 1)
    intake(rig.app, ts(0))  # the call is read: due for a worker
    worker = threading.Thread(target=drain, args=(rig.app, ts(0), 1))
    worker.start()
    try:
        wait_for(lambda: servers.amo.count(NOTES, "POST") >= 1)  # the worker's note is on its way
        with store.db.connection_context():  # the intake lane's own connection, as in the daemon
            intake(rig.app, ts(1))
    finally:
        worker.join(timeout=30)
    assert servers.amo.count(NOTES, "POST") == 1, "the note was posted by both lanes"
    assert len(servers.amo.created_notes) == 1 and calls()[0].stage == "notified"
    (row,) = Delivery.select().where(Delivery.kind == "amo_note")
    assert row.done_at is not None and row.claimed_by is None, "sent, recorded, and given back"
    intake(rig.app, ts(2))
    assert servers.amo.count(NOTES, "POST") == 1, "nothing left to send"
