"""amoCRM write-back through the real amoCRM client against the fake amoCRM: a note with the
summary, score and next step; a task for the next step; each exactly once; opt-in."""

from __future__ import annotations

from datetime import UTC, datetime

from salesbot_poller.lanes import run_once
from salesbot_poller.store import Delivery
from tests.conftest import Servers
from tests.loopback_app import IVAN, add_call, at, calls, loopback_rig


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
