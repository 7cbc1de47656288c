"""Intake against the loopback amoCRM through the real client: what a cycle costs in requests,
that the rate limit holds (the server enforces and counts it), that a note's late link is
picked up, and that a failing amoCRM is left alone for the rest of the cycle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from pydantic import SecretStr

from salesbot_poller.app import build_amo
from salesbot_poller.domain import Stage
from salesbot_poller.lanes import run_once
from salesbot_poller.pipeline.context import App, Cycle
from salesbot_poller.pipeline.intake import poll, resolve_new
from salesbot_poller.services.amocrm import MAX_QUERY_CHARS, AmoClient, AmoForbidden, id_batches
from salesbot_poller.services.amocrm_auth import LongLivedToken
from salesbot_poller.store import Call
from tests.builder import build_rig
from tests.conftest import AMO_TOKEN, Servers

NOW = datetime.now(UTC).replace(microsecond=0)


def make_app(servers: Servers, tmp_path: Path) -> App:
    """The real amoCRM client against the loopback amoCRM; the rest in memory."""
    amocrm = {"base_url": servers.amo.base_url, "long_lived_token": AMO_TOKEN}
    return build_rig(tmp_path, real_source=True, now=NOW, tz=None, amocrm=amocrm, openai={"api_key": "sk-test"}).app


def intake_cycle(app: App, at: datetime) -> Cycle:
    cycle = Cycle(app=app, now=int(at.timestamp()))
    poll(app, cycle)
    resolve_new(app, cycle)
    return cycle


def test_an_idle_cycle_costs_one_request(servers: Servers, tmp_path: Path) -> None:
    cycle = intake_cycle(make_app(servers, tmp_path), NOW)
    assert cycle.events == 0 and servers.amo.count() == 1


@pytest.mark.slow
def test_1000_events_over_10_pages_cost_at_most_25_requests_and_no_rate_violation(
    servers: Servers, tmp_path: Path
) -> None:
    servers.amo.add_account_calls(1000, int(NOW.timestamp()) - 1800)
    servers.amo.enforce_rate_limit = True  # an excess request would get amoCRM's HTML 429
    app = make_app(servers, tmp_path)
    cycle = intake_cycle(app, NOW)
    assert cycle.events == 1000 and cycle.new == 1000
    assert servers.amo.rate_violations() == 0
    pages = [r.query["page"][0] for r in servers.amo.requests_to("/api/v4/events$")]
    assert pages == [str(n) for n in range(1, 11)]
    assert servers.amo.count() <= 25
    assert max(len(r.target) for r in servers.amo.requests) < 7000  # under the common 8 KB request line
    assert app.store.stage_counts() == {"ready": 1000}
    ready = Call.get(Call.note_id == 1_200_000_001)
    assert ready.entity_name == "lead 25000001" and ready.manager_name == "Иван Петров"


def note_ids(request_query: dict[str, list[str]]) -> list[int]:
    return sorted(int(v) for v in request_query.get("filter[id][]", []))


@pytest.mark.slow
def test_a_note_whose_link_appears_on_a_later_cycle(servers: Servers, tmp_path: Path) -> None:
    amo = servers.amo
    start = int(NOW.timestamp()) - 600
    for note_id, kind, entity in ((1, "lead", 7001), (2, "lead", 7002), (3, "contact", 8001)):
        amo.add_entity(kind, entity, f"{kind} {entity}")
        amo.add_call(
            entity_type=kind, entity_id=entity, note_id=note_id, duration=90, phone="+7999", link=None, created_at=start
        )
    app = make_app(servers, tmp_path)
    intake_cycle(app, NOW)
    assert app.store.stage_counts() == {"new": 3}
    assert amo.count("/api/v4/(leads|contacts)$") == 0  # no names while the link is missing
    amo.set_note_link("leads", 1, "https://rec.example/1.mp3")
    amo.set_note_link("contacts", 3, "https://rec.example/3.mp3")
    first = len(amo.requests)
    intake_cycle(app, NOW + timedelta(seconds=61))
    later = amo.requests[first:]
    notes = [r for r in later if r.path.endswith("/notes")]
    assert sorted((r.path, tuple(note_ids(r.query))) for r in notes) == [
        ("/api/v4/contacts/notes", (3,)),
        ("/api/v4/leads/notes", (1, 2)),  # by note id, batched
    ]
    calls = {c.note_id: c for c in Call.select()}
    assert calls[1].stage == Stage.READY and calls[1].link == "https://rec.example/1.mp3"
    assert calls[3].stage == Stage.READY and calls[3].entity_name == "contact 8001"
    assert calls[2].stage == Stage.NEW and calls[2].attempts == 2


@pytest.mark.slow
def test_once_amocrm_failed_the_cycle_asks_it_nothing_more(servers: Servers, tmp_path: Path) -> None:
    amo = servers.amo
    amo.add_call(entity_id=7001, note_id=1, duration=90, phone="+7999", link=None, created_at=int(NOW.timestamp()) - 60)
    clock = [NOW]
    sleeps: list[float] = []
    app = make_app(servers, tmp_path)
    app.source = AmoClient(
        requests.Session(), amo.base_url, LongLivedToken(AMO_TOKEN), lambda: clock[0], sleep=sleeps.append
    )
    run_once(app, NOW)
    waiting = Call.get()
    amo.fail_next("/api/v4/events", 500, "<html>500</html>", times=50)
    clock[0] = NOW + timedelta(seconds=61)
    before = amo.count("/api/v4/leads/notes")
    cycle = run_once(app, clock[0])
    assert cycle.poll_error is not None and "HTTP 500" in cycle.poll_error
    assert amo.count("/api/v4/leads/notes") == before  # the due call was not looked at
    again = Call.get()
    assert (again.attempts, again.next_attempt_at) == (waiting.attempts, waiting.next_attempt_at)


def test_a_failing_notes_request_leaves_the_other_entity_types_for_the_next_cycle(
    servers: Servers, tmp_path: Path
) -> None:
    amo = servers.amo
    start = int(NOW.timestamp()) - 60
    amo.add_call(entity_id=7001, note_id=1, duration=90, phone="+7999", link=None, created_at=start)
    amo.add_call(
        entity_type="contact", entity_id=8001, note_id=2, duration=90, phone="+7999", link=None, created_at=start
    )
    app = make_app(servers, tmp_path)
    app.source = AmoClient(requests.Session(), amo.base_url, LongLivedToken(AMO_TOKEN), lambda: NOW, retry_seconds=0)
    amo.fail_next("/api/v4/leads/notes", 503, "<html>503</html>")
    intake_cycle(app, NOW)
    assert amo.count("/api/v4/contacts/notes") == 0
    calls = {c.note_id: c for c in Call.select()}
    assert calls[1].attempts == 1 and "HTTP 503" in (calls[1].last_error or "")
    assert calls[2].attempts == 0 and calls[2].last_error is None


def test_after_a_403_the_next_cycles_do_not_call_amocrm_until_the_pause_ends(servers: Servers, tmp_path: Path) -> None:
    amo = servers.amo
    app = make_app(servers, tmp_path)
    amo.fail_next("/api/v4/events", 403, "<html><h1>403 Forbidden</h1></html>")
    with pytest.raises(AmoForbidden, match="IP may be blocked"):
        run_once(app, NOW)
    # A restart: a new client on the same database.
    later = NOW + timedelta(minutes=9)
    app.source = build_amo(app.config, app.store, lambda: later)
    cycle = run_once(app, later)
    assert cycle.poll_error is not None and "paused until" in cycle.poll_error
    assert amo.count("/api/v4/") == 1
    done = NOW + timedelta(minutes=11)
    app.source = build_amo(app.config, app.store, lambda: done)
    assert run_once(app, done).poll_error is None and amo.count("/api/v4/") == 2


@pytest.mark.slow
def test_token_refreshes_and_api_requests_share_one_limit(servers: Servers, tmp_path: Path) -> None:
    """Every call below gets a 401, refreshes and repeats: three requests, two routes, one
    limit. Separate limiters for the API and OAuth would let 14 requests a second through."""
    amo = servers.amo
    amo.enforce_rate_limit = True
    app = make_app(servers, tmp_path)
    oauth = app.config.amocrm.model_copy(
        update={
            "long_lived_token": SecretStr(""),
            "client_id": "cid",
            "client_secret": SecretStr("csecret"),
            "redirect_uri": "https://bot.example/cb",
            "refresh_token": SecretStr("refresh-1"),
        }
    )
    client = build_amo(app.config.model_copy(update={"amocrm": oauth}), app.store, lambda: NOW)
    client.account()  # seeds and refreshes
    for _ in range(6):
        amo.valid_tokens.clear()
        client.account()
    assert amo.count("/oauth2/access_token") == 7 and amo.count() == 7 + 1 + 12
    assert amo.rate_violations() == 0


def test_id_batches_hold_250_ids_unless_the_url_would_grow_too_long() -> None:
    assert [len(b) for b in id_batches([10 + n % 90 for n in range(600)])] == [250, 250, 100]
    long_ids = [1_200_000_000 + n for n in range(250)]
    batches = list(id_batches(long_ids))
    assert len(batches) == 2 and [i for b in batches for _, i in b] == long_ids
    for batch in batches:
        assert len(urlencode(batch)) <= MAX_QUERY_CHARS
