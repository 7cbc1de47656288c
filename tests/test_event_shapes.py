"""Call events as they are found in the wild (tests/data/amocrm_events.json), through the
real amoCRM client against the loopback amoCRM: an integer event id and numeric-string ids
are read as the official SDK reads them (ids above 2^53 too), and every event set aside says
which field and shows the value it had, cut."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from salesbot_poller.cli.commands import retry_events
from salesbot_poller.lanes import run_once
from salesbot_poller.pipeline.context import App, Cycle
from salesbot_poller.pipeline.intake import poll
from salesbot_poller.services.amocrm import AmoClient
from salesbot_poller.services.amocrm_auth import LongLivedToken
from salesbot_poller.services.amocrm_parse import SHOWN, parse_event
from salesbot_poller.store import Call
from salesbot_poller.store.models import SeenEvent
from tests.builder import build_rig
from tests.conftest import AMO_TOKEN, Servers
from tests.hostile import nested
from tests.samples import names, sample

EVENTS = "amocrm_events.json"
NOW = datetime.now(UTC).replace(microsecond=0)
T0 = int(NOW.timestamp())


def _app(servers: Servers, tmp_path: Path) -> App:
    """The real amoCRM client against the loopback amoCRM (its in-call retries do not sleep)."""
    amocrm = {"base_url": servers.amo.base_url, "long_lived_token": AMO_TOKEN}
    app = build_rig(tmp_path, real_source=True, now=NOW, tz=None, amocrm=amocrm, openai={"api_key": "sk-test"}).app
    token = LongLivedToken(AMO_TOKEN)
    app.source = AmoClient(requests.Session(), servers.amo.base_url, token, lambda: NOW, sleep=lambda _: None)
    return app


def _serve(servers: Servers, event: dict[str, object], created_at: int) -> None:
    servers.amo.events.append(event | {"created_at": event.get("created_at", created_at)})


def _set_aside() -> dict[str, str]:
    return {str(r.event_id): str(r.error) for r in SeenEvent.select().where(SeenEvent.error.is_null(False))}


def test_every_real_world_event_shape_becomes_a_call(servers: Servers, tmp_path: Path) -> None:
    for n, name in enumerate(names(EVENTS)):
        _serve(servers, sample(EVENTS, name), T0 - 100 + n)
    app = _app(servers, tmp_path)
    cycle = Cycle(app=app, now=T0)
    poll(app, cycle)
    assert _set_aside() == {}
    assert cycle.new == 4
    got = {(c.event_id, c.entity_type, c.entity_id, c.note_id) for c in Call.select()}
    assert got == {
        ("01jd4y1b4g2n6x8m0q3r5t7v9w", "leads", 7101, 5101),
        ("1735689600123", "contacts", 7102, 5102),
        ("01jd4y1b4g2n6x8m0q3r5t7v9y", "leads", 7103, 5103),
        ("9007199254740993", "companies", 9007199254740995, 9007199254740997),
    }


LONG = "Ромашка " * 200


@pytest.mark.parametrize(
    ("change", "field", "value"),
    [
        ({"id": 12.5}, "'id'", "12.5"),
        ({"id": {"ulid": "01x"}}, "'id'", "{'ulid': '01x'}"),
        ({"entity_id": "7101a"}, "'entity_id'", "'7101a'"),
        ({"entity_id": 7101.0}, "'entity_id'", "7101.0"),
        ({"entity_id": -1}, "'entity_id'", "-1"),
        ({"entity_id": LONG}, "'entity_id'", "'Ромашка Ромашка"),
        ({"value_after": [{"note": {"id": "5101x"}}]}, "'value_after[0].note.id'", "'5101x'"),
        ({"value_after": [{"text": LONG}]}, "'value_after[0].note.id'", "[{'text': 'Ромашка"),
    ],
)
def test_a_set_aside_event_shows_the_field_and_its_value_cut(
    servers: Servers, tmp_path: Path, change: dict[str, object], field: str, value: str
) -> None:
    _serve(servers, sample(EVENTS, "ulid_id") | change, T0 - 60)
    app = _app(servers, tmp_path)
    poll(app, Cycle(app=app, now=T0))
    ((_, reason),) = _set_aside().items()
    assert f"field {field} is" in reason and value in reason, reason
    assert "missing or not" not in reason
    assert len(reason) < SHOWN + 120, "the value is shown cut"


def test_an_unreadable_event_is_set_aside_showing_what_was_served(servers: Servers, tmp_path: Path) -> None:
    servers.amo.poison_event(nested(5000).encode(), created_at=T0 - 60)
    servers.amo.poison_event(b"[1, 2]", created_at=T0 - 50, event_id="01notanobject0000000000000")
    app = _app(servers, tmp_path)
    poll(app, Cycle(app=app, now=T0))
    reasons = sorted(_set_aside().values())
    assert len(reasons) == 2, reasons
    deep = next(r for r in reasons if "nested too deep" in r)
    assert "'[[[[[[" in deep and len(deep) < 400, deep
    assert any("event is [1, 2], not an object" in r for r in reasons), reasons


def test_an_event_set_aside_by_an_earlier_version_is_taken_back_once(servers: Servers, tmp_path: Path) -> None:
    """An integer id used to be set aside under a stand-in `unknown-…` id: `retry --event`
    now reads it, and the stand-in row goes with it; a poll that reads it again adds nothing."""
    raw = sample(EVENTS, "integer_id") | {"created_at": T0 - 60}
    servers.amo.add_call(
        entity_type="contact", entity_id=7102, note_id=5102, duration=60, phone="+7999", link=None, created_at=T0 - 60
    )
    servers.amo.events[-1] = raw  # the event of that note, with an integer id
    app = _app(servers, tmp_path)
    stand_in = "unknown-0123456789abcdef0123"
    old_reason = "field 'id' is missing or not a string"
    app.store.record_window([], [(stand_in, old_reason, json.dumps(raw))], T0 - 3600, T0 - 3600)
    said: list[str] = []
    assert retry_events(app.store, [stand_in], T0, said.append), said
    assert _set_aside() == {} and [c.event_id for c in Call.select()] == ["1735689600123"]
    run_once(app, NOW)
    assert [c.event_id for c in Call.select()] == ["1735689600123"], "the same event is one call"


def test_ids_are_read_as_notes_read_them() -> None:
    event = parse_event(sample(EVENTS, "numeric_string_entity_id") | {"created_at": " 1735689600 "})
    assert (event.entity_id, event.note_id, event.created_at) == (7103, 5103, 1735689600)
    with pytest.raises(ValueError, match=r"field 'created_at' is 'вчера', not an integer"):
        parse_event(sample(EVENTS, "ulid_id") | {"created_at": "вчера"})
    with pytest.raises(ValueError, match=r"field 'entity_id' is '1e3', not an integer"):
        parse_event(sample(EVENTS, "ulid_id") | {"entity_id": "1e3", "created_at": 1})
    with pytest.raises(ValueError, match=r"field 'entity_id' is '99999999999999999999', out of range"):
        parse_event(sample(EVENTS, "ulid_id") | {"entity_id": "99999999999999999999", "created_at": 1})
