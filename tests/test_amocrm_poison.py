"""One poisoned item in an amoCRM answer (JSON nested 100,000 deep, bytes that are not JSON)
makes the whole answer unreadable. It must cost its own call or event only: the notes batch
is read again in halves down to the poisoned note, the events page in smaller pages down to
the poisoned position, which is set aside so the cursor moves on. Through the real client
against the loopback amoCRM (`FakeAmoCRM.poison_note` / `poison_event`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from salesbot_poller.app import build_app
from salesbot_poller.cli.commands import retry_events
from salesbot_poller.config import load_config
from salesbot_poller.errors import Unreadable
from salesbot_poller.lanes import run_once
from salesbot_poller.phones import display, mask
from salesbot_poller.pipeline.context import App, Cycle
from salesbot_poller.pipeline.intake import SETTLE_SECONDS, poll
from salesbot_poller.services.amocrm import AmoClient
from salesbot_poller.services.amocrm_auth import LongLivedToken
from salesbot_poller.services.amocrm_lists import MAX_BODY_BYTES, UnreadableAnswer, read_ids, read_positions
from salesbot_poller.store import Call
from salesbot_poller.store.models import SeenEvent
from tests.builder import build_rig
from tests.conftest import AMO_TOKEN, Servers
from tests.fakes import make_mp3
from tests.hostile import nested

DEEP = nested(100_000)
POISONS = {
    "nested 100,000 deep": lambda n: (f'{{"id": {n}, "note_type": "call_in", "params": ' + DEEP + "}").encode(),
    "not JSON": lambda n: f'{{"id": {n}, "note_type": "call_in", "params": {{"phone": +7999 tail}}}}'.encode(),
}


def _now() -> datetime:
    return datetime.now(UTC)


def _no_sleep(seconds: float) -> None:
    """amoCRM's in-call retries wait: not in a test."""


@pytest.fixture
def app(servers: Servers) -> Iterator[App]:
    """The whole bot against the loopback servers; amoCRM's in-call retries do not sleep."""
    config = load_config(servers.write_config(), {})
    app = build_app(config, _now)
    app.source = AmoClient(requests.Session(), config.amocrm.base_url, LongLivedToken(AMO_TOKEN), _now, sleep=_no_sleep)
    try:
        yield app
    finally:
        app.store.close()


@pytest.mark.slow
@pytest.mark.parametrize("poison", sorted(POISONS))
def test_a_poisoned_note_costs_its_own_call_only_and_the_batch_goes_out(
    servers: Servers, app: App, poison: str, caplog: pytest.LogCaptureFixture
) -> None:
    amo, t0 = servers.amo, int(time.time())
    missed = {3, 8}
    for n in range(1, 11):  # ten calls on leads: one notes request for all of them
        answered = n not in missed
        link = servers.recordings.add(f"/r/{n}.mp3", make_mp3(1.0)) if answered else None
        amo.add_call(
            entity_id=7000 + n,
            note_id=n,
            duration=60 if answered else 0,
            call_status=4 if answered else 6,
            phone=f"+7999000{n:04d}",
            link=link,
            created_at=t0 - 120 + n,
        )
    amo.poison_note("leads", 5, POISONS[poison](5))
    caplog.set_level(logging.INFO)

    cycle = run_once(app, datetime.fromtimestamp(t0, UTC))

    assert cycle.poll_error is None
    calls = {c.note_id: c for c in Call.select()}
    texts = [m["text"] for m in servers.telegram.messages]
    # a card shows the phone masked, a missed call's alert in full (to call back)
    sent = {n: sum(mask(c.phone) in t or display(c.phone) in t for t in texts) for n, c in calls.items() if c.phone}
    assert {n: c.stage for n, c in calls.items() if n != 5} == {
        n: "missed_alerted" if n in missed else "notified" for n in range(1, 11) if n != 5
    }
    assert sent == {n: 1 for n in range(1, 11) if n != 5}, "nine delivered, once each"
    poisoned = calls[5]
    assert (poisoned.stage, poisoned.attempts) == ("new", 1), "set aside: looked at again later, alone"
    assert (poisoned.last_error or "").startswith("note 5 on leads/7005: unreadable in amoCRM's answer: ")
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "note 5 " in r.getMessage()]
    assert len(lines) == 1, lines
    assert len(lines[0]) < 400, "the poisoned value is shown cut"
    assert "Traceback" not in caplog.text


def _intake_app(servers: Servers, tmp_path: Path, now: datetime) -> App:
    amocrm = {"base_url": servers.amo.base_url, "long_lived_token": AMO_TOKEN}
    return build_rig(tmp_path, real_source=True, now=now, tz=None, amocrm=amocrm, openai={"api_key": "sk-test"}).app


def _add_missed_calls(servers: Servers, count: int, first_at: int) -> None:
    for n in range(count):
        servers.amo.add_call(
            entity_id=7000 + n, note_id=n + 1, duration=0, call_status=6, phone="+7", link=None, created_at=first_at + n
        )


@pytest.mark.parametrize(
    "poison",
    [DEEP.encode(), b'{"id": "01x", "type": tail}', b'"not an object"'],
    ids=["nested 100,000 deep", "not JSON", "not an object"],
)
def test_a_poisoned_event_is_set_aside_by_position_and_intake_goes_on(
    servers: Servers, tmp_path: Path, poison: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = int(now.timestamp())
    _add_missed_calls(servers, 50, t0 - 600)
    servers.amo.poison_event(poison, created_at=t0 - 600 + 24)  # between the 25th and 26th
    app = _intake_app(servers, tmp_path, now)

    first = Cycle(app=app, now=t0)
    poll(app, first)
    assert servers.amo.count("/api/v4/events") <= 16, "halving 100 down to 1: two pages a size, and one more"

    assert first.new == 50 and Call.select().count() == 50
    assert len({c.event_id for c in Call.select()}) == 50
    (aside,) = SeenEvent.select().where(SeenEvent.error.is_null(False))
    assert "position 25" in (aside.error or ""), aside.error
    assert aside.raw_json and len(aside.raw_json) <= 2001
    assert app.store.cursor() == t0 - SETTLE_SECONDS, "the cursor moved past the window"
    said: list[str] = []
    assert not retry_events(app.store, [aside.event_id], t0, said.append)
    assert said[0].startswith(f"event {aside.event_id}: still not a call event: "), said

    later = now + timedelta(seconds=60)
    second = run_once(app, later)  # the poisoned event is still in the overlap: read around again
    assert second.poll_error is None and second.new == 0
    assert SeenEvent.select().where(SeenEvent.error.is_null(False)).count() == 1
    assert Call.select().count() == 50, "no event is processed twice"
    assert sum("ignored" in r.getMessage() for r in caplog.records) == 1, "logged once"


def test_an_events_page_readable_nowhere_fails_the_poll_after_a_few_requests(servers: Servers, tmp_path: Path) -> None:
    """A server (or a proxy) answering garbage to everything is not mistaken for poisoned
    events: a bounded number of requests, then the poll fails, nothing set aside."""
    now = datetime.now(UTC).replace(microsecond=0)
    _add_missed_calls(servers, 5, int(now.timestamp()) - 600)
    deep = ('{"_embedded": {"events": ' + DEEP + "}}").encode()
    servers.amo.fail_next(r"^/api/v4/events", 200, deep, {"Content-Type": "application/hal+json"}, times=1000)
    app = _intake_app(servers, tmp_path, now)
    with pytest.raises(Unreadable, match="nested too deep"):
        poll(app, Cycle(app=app, now=int(now.timestamp())))
    assert servers.amo.count("/api/v4/events") <= 20
    assert SeenEvent.select().count() == 0 and app.store.cursor() is None


def test_an_answer_past_the_size_cap_is_not_read_and_its_page_is_read_around(servers: Servers, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    _add_missed_calls(servers, 3, int(now.timestamp()) - 600)
    huge = b'{"_embedded": {"events": ["' + b"x" * (MAX_BODY_BYTES + 1) + b'"]}}'
    servers.amo.fail_next(r"^/api/v4/events", 200, huge, {"Content-Type": "application/hal+json"})
    app = _intake_app(servers, tmp_path, now)
    cycle = Cycle(app=app, now=int(now.timestamp()))
    poll(app, cycle)
    assert cycle.new == 3 and app.store.set_aside_events() == (0, [])


def _paged(items: list[int], poisoned: set[int], calls: list[tuple[int, int]]) -> Callable[[int, int], dict | None]:
    """A paged list in memory whose pages holding a poisoned position are unreadable."""

    def fetch(page: int, limit: int) -> dict | None:
        calls.append((page, limit))
        start = (page - 1) * limit
        chunk = items[start : start + limit]
        if poisoned & set(range(start, start + len(chunk))):
            raise UnreadableAnswer("unreadable", b'{"_embedded": {"things": [' + str(start).encode() + b"]}}")
        if not chunk:
            return None
        links = {"next": {"href": "..."}} if start + limit < len(items) else {}
        return {"_links": links, "_embedded": {"things": chunk}}

    return fetch


def test_positions_are_read_around_many_poisoned_items_each_readable_one_once() -> None:
    """Seven poisoned items in a row, more than `MAX_UNREADABLE`, but fewer than those read."""
    items, poisoned, calls = list(range(1000, 1300)), {10, 11, 12, 13, 14, 15, 16, 99, 100, 299}, []
    read, unread = read_positions(_paged(items, poisoned, calls), "list", "things", 100, 500)
    assert read == [(i, 1000 + i) for i in range(300) if i not in poisoned]
    assert [u.position for u in unread] == sorted(poisoned)
    assert len(calls) < 150


def test_a_list_unreadable_everywhere_costs_a_bounded_number_of_requests() -> None:
    calls: list[tuple[int, int]] = []
    with pytest.raises(UnreadableAnswer):
        read_positions(_paged(list(range(300)), set(range(10**6)), calls), "list", "things", 100, 500)
    assert len(calls) <= 20
    with pytest.raises(UnreadableAnswer):
        read_ids(lambda ids: calls.append((0, 0)) or (_ for _ in ()).throw(UnreadableAnswer("x")), list(range(250)))
    assert len(calls) <= 60


def test_ids_are_read_in_halves_down_to_the_poisoned_one() -> None:
    asked: list[list[int]] = []

    def read(ids: list[int]) -> list[int]:
        asked.append(ids)
        if 77 in ids:
            raise UnreadableAnswer("amoCRM GET /notes: answer is JSON nested too deep to read")
        return ids

    found, unreadable = read_ids(read, list(range(250)))
    assert sorted(found) == [i for i in range(250) if i != 77]
    assert unreadable == {77: "amoCRM GET /notes: answer is JSON nested too deep to read"}
    assert len(asked) <= 2 * 8 + 2
