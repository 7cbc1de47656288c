"""Call notes as they are found in the wild (tests/data/amocrm_call_notes.json), through the
real amoCRM client against the loopback amoCRM and the real Telegram client against the fake
Bot API: a missed-call alert needs a number to call back and a note that says "missed"
(status "not reached"/"busy", or a duration of 0). A note with neither — `params.text` only,
as the official PHP SDK's test data has it — is skipped with the reason, never alerted,
never escalated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from salesbot_poller.domain import Stage
from salesbot_poller.lanes import run_once
from salesbot_poller.pipeline.intake import classify
from salesbot_poller.services.amocrm_parse import parse_note
from salesbot_poller.store import Call
from tests.builder import already_running, build_rig
from tests.conftest import Servers
from tests.loopback_app import add_call, at, calls, loopback_rig
from tests.samples import sample

NOTES = "amocrm_call_notes.json"
NOW = datetime.now(UTC).replace(microsecond=0)


def _served(servers: Servers, note_id: int, name: str, created_at: int) -> None:
    """A call event whose note amoCRM serves as sample `name`."""
    entity_id = 7000 + note_id
    servers.amo.add_call(entity_id=entity_id, note_id=note_id, duration=0, phone="", link=None, created_at=created_at)
    note = sample(NOTES, name) | {"id": note_id, "entity_id": 7000 + note_id}
    servers.amo.notes[("leads", note_id)] = note | {"created_at": created_at, "updated_at": created_at}


def test_a_text_only_note_is_skipped_with_the_reason_never_alerted_nor_escalated(servers: Servers) -> None:
    t0 = int(NOW.timestamp())
    _served(servers, 1, "text_only", t0 - 120)
    _served(servers, 2, "missed_no_phone", t0 - 110)
    _served(servers, 3, "missed_status_only", t0 - 100)  # the control: alerted, then escalated
    rig = build_rig(servers.config_text(), real_source=True, real_notifier=True, now=NOW)
    already_running(rig.app, NOW - timedelta(hours=1))  # the control's escalation comes an SLA after its ring

    run_once(rig.app, NOW)
    run_once(rig.app, NOW + timedelta(hours=2))  # well past the missed-call SLA

    by_note = {c.note_id: c for c in Call.select()}
    assert by_note[1].stage == Stage.SKIPPED and by_note[2].stage == Stage.SKIPPED
    reason = by_note[1].skip_reason or ""
    assert all(f in reason for f in ("params.duration", "params.call_status", "params.phone")), reason
    assert by_note[2].skip_reason == "missed call with no number to call back (params.phone missing)"
    assert by_note[3].stage == Stage.MISSED_ALERTED
    texts = [m["visible_text"] for m in servers.telegram.messages]
    assert not any("номер не определён" in t for t in texts), texts
    assert sum("Пропущенный звонок" in t for t in texts) == 1 and sum("Не перезвонили" in t for t in texts) == 1
    assert all("+7 912 312-32-10" in t for t in texts), "only the call with a number was alerted and escalated"


@pytest.mark.parametrize(
    ("params", "direction", "expected"),
    [
        ({"text": "123123"}, "in", Stage.SKIPPED),  # nothing says missed, nor how long
        ({"phone": "+79991234567"}, "in", Stage.SKIPPED),  # a number, but no status or duration
        ({"phone": "+79991234567", "duration": 0}, "in", Stage.MISSED),
        ({"phone": "+79991234567", "call_status": 7}, "in", Stage.MISSED),
        ({"phone": "+79991234567", "duration": "0", "call_status": "6"}, "in", Stage.MISSED),  # as strings
        ({"phone": "anonymous", "call_status": 6}, "in", Stage.SKIPPED),
        ({"phone": "101", "duration": 0}, "in", Stage.SKIPPED),  # an extension
        ({"phone": "+79991234567", "duration": 0}, "out", Stage.SKIPPED),
        ({"phone": "+79991234567", "duration": 60, "call_status": 4}, "in", Stage.NEW),  # the link comes later
        ({"duration": 60, "call_status": 4, "link": "https://rec.example/1.mp3"}, "in", Stage.READY),
    ],
)
def test_what_a_note_says_decides_its_stage(params: dict[str, object], direction: str, expected: Stage) -> None:
    note = parse_note({"id": 1, "note_type": f"call_{direction}", "params": params})
    assert classify(direction, note, min_duration=10)[0] == expected


def test_a_note_with_no_duration_is_not_read_as_zero() -> None:
    note = parse_note(sample(NOTES, "text_only") | {"id": 5})
    assert note.duration is None and note.phone == "" and note.call_status is None
    stage, reason = classify("in", note, 0)
    assert stage == Stage.SKIPPED
    assert reason == (
        "the note has no params.duration, params.call_status, params.phone, params.link: "
        "nothing says the call was missed, nor how long it was"
    )


def test_an_alert_stored_without_a_number_is_never_escalated(servers: Servers) -> None:
    """A missed call alerted by an earlier version (no number required then) gets no escalation."""
    rig = loopback_rig(servers, paced=False, poller={"missed_call_sla_minutes": 15})
    add_call(rig, 1, minutes=-2, duration=0, status=6)
    run_once(rig.app, at(0))
    (call,) = calls()
    assert call.stage == Stage.MISSED_ALERTED
    Call.update(phone="").where(Call.id == call.id).execute()  # as an earlier version stored it
    count = len(servers.telegram.messages)
    run_once(rig.app, at(60))
    assert len(servers.telegram.messages) == count
