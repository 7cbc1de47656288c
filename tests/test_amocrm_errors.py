"""What each amoCRM failure becomes, against the loopback amoCRM through the real `requests`:
429 (with and without Retry-After, HTML), 5xx, timeouts, 403, 402, and 204 on every list.
Retry waits are recorded by an injected sleep, never waited for."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
import requests

from salesbot_poller.cli import commands
from salesbot_poller.errors import FatalError, TransientError
from salesbot_poller.services.amocrm import AmoClient, AmoForbidden
from salesbot_poller.services.amocrm_auth import LongLivedToken
from salesbot_poller.services.throttle import AmoPause, AmoPaused
from salesbot_poller.store import Store
from tests.conftest import AMO_TOKEN, Servers
from tests.fakes import FakeAmoCRM

HTML_429 = "<html><head><title>429 Too Many Requests</title></head><body>nginx</body></html>"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


class Amo:
    """An AmoClient on the fake, its recorded sleeps, its clock and its pause state."""

    def __init__(self, fake: FakeAmoCRM, store: Store | None = None, **options: object) -> None:
        self.fake, self.sleeps, self.clock = fake, [], Clock()
        self.store = store
        self.client = self.make(**options)

    def make(self, **options: object) -> AmoClient:
        return AmoClient(
            requests.Session(),
            self.fake.base_url,
            LongLivedToken(AMO_TOKEN),
            self.clock,
            sleep=self.sleeps.append,
            pause=AmoPause(self.clock, self.store),
            **options,  # type: ignore[arg-type]
        )


@pytest.fixture
def amo(servers: Servers) -> Amo:
    return Amo(servers.amo)


def test_429_with_retry_after_waits_exactly_that(amo: Amo) -> None:
    amo.fake.fail_next("/api/v4/account", 429, {"status": 429}, headers={"Retry-After": "3"})
    assert amo.client.account()["name"] == "Acme"
    assert amo.sleeps == [3]


def test_html_429_without_retry_after_backs_off_exponentially_with_jitter(amo: Amo) -> None:
    amo.fake.fail_next("/api/v4/account", 429, HTML_429, times=3)
    assert amo.client.account()["name"] == "Acme"
    assert len(amo.sleeps) == 3
    for n, slept in enumerate(amo.sleeps):
        assert 2**n <= slept <= 2**n + 1  # 1, 2, 4 s, plus up to 1 s of jitter


def test_a_json_retry_after_in_the_body_is_honoured(amo: Amo) -> None:
    amo.fake.fail_next("/api/v4/account", 429, {"title": "Too Many Requests", "retry_after": 7})
    amo.client.account()
    assert amo.sleeps == [7]


def test_retry_after_as_an_http_date(amo: Amo) -> None:
    when = format_datetime(amo.clock.now + timedelta(seconds=20), usegmt=True)
    amo.fake.fail_next("/api/v4/account", 503, "<html>busy</html>", headers={"Retry-After": when})
    amo.client.account()
    assert amo.sleeps == [20]


def test_a_retry_after_beyond_the_budget_ends_the_call_and_nothing_is_sent_before_it(amo: Amo) -> None:
    amo.fake.fail_next("/api/v4/events", 429, HTML_429, headers={"Retry-After": "600"})
    with pytest.raises(TransientError, match="429") as caught:
        amo.client.call_events(0, 10)
    assert caught.value.retry_after == 600 and amo.sleeps == []
    with pytest.raises(AmoPaused, match="retry after 600 s"):
        amo.client.call_events(0, 10)
    assert amo.fake.count("/api/v4/") == 1
    amo.clock.now += timedelta(seconds=601)
    assert amo.client.call_events(0, 10).events == []


@pytest.mark.slow
def test_persistent_500_gives_up_within_about_two_minutes(amo: Amo) -> None:
    amo.fake.fail_next("/api/v4/events", 500, "<html><h1>500 Internal Server Error</h1></html>", times=50)
    with pytest.raises(TransientError, match="HTTP 500"):
        amo.client.call_events(0, 10)
    assert 60 <= sum(amo.sleeps) <= 120
    assert amo.fake.count("/api/v4/events") == len(amo.sleeps) + 1


def test_the_retry_budget_is_configurable(servers: Servers) -> None:
    amo = Amo(servers.amo, retry_seconds=5)
    servers.amo.fail_next("/api/v4/events", 502, "<html>Bad Gateway</html>", times=50)
    with pytest.raises(TransientError, match="HTTP 502"):
        amo.client.call_events(0, 10)
    assert sum(amo.sleeps) <= 5 and servers.amo.count("/api/v4/events") <= 3


def test_a_read_timeout_is_retried(servers: Servers) -> None:
    amo = Amo(servers.amo, timeout=(5, 0.3))
    servers.amo.delay_next("/api/v4/account", 1.0)
    assert amo.client.account()["name"] == "Acme"
    assert len(amo.sleeps) == 1 and servers.amo.count("/api/v4/account") == 2


@pytest.mark.slow
def test_a_refused_connection_is_transient_after_bounded_retries(servers: Servers) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    client = AmoClient(
        requests.Session(), f"http://127.0.0.1:{port}", LongLivedToken(AMO_TOKEN), Clock(), sleep=lambda s: None
    )
    with pytest.raises(TransientError, match="ConnectionError") as caught:
        client.account()
    assert AMO_TOKEN not in str(caught.value)


def test_403_pauses_every_amocrm_call_for_ten_minutes_even_after_a_restart(servers: Servers, tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path}/state.db", 0)
    amo = Amo(servers.amo, store)
    servers.amo.fail_next("/api/v4/events", 403, "<html><h1>403 Forbidden</h1></html>")
    with pytest.raises(AmoForbidden) as caught:
        amo.client.call_events(0, 10)
    message = str(caught.value)
    assert "\n" not in message and "IP may be blocked" in message and "amoCRM support" in message
    until = (amo.clock.now + timedelta(seconds=600)).strftime("%Y-%m-%d %H:%M UTC")
    assert f"not called again until {until}" in message
    restarted = amo.make()
    with pytest.raises(AmoPaused, match="HTTP 403"):
        restarted.call_events(0, 10)
    with pytest.raises(AmoPaused):
        restarted.account()
    assert servers.amo.count("/api/v4/") == 1
    lines: list[str] = []
    commands.status(store, lines.append, now=int(amo.clock.now.timestamp()))
    (paused,) = [line for line in lines if line.startswith("amocrm:")]
    assert paused.startswith(f"amocrm: amoCRM calls paused until {until}") and "HTTP 403" in paused, paused
    amo.clock.now += timedelta(seconds=601)
    assert restarted.account()["name"] == "Acme"
    lines.clear()
    commands.status(store, lines.append, now=int(amo.clock.now.timestamp()))
    assert not any(line.startswith("amocrm:") for line in lines), "the pause is over: status says nothing"


def test_403_on_the_users_list_is_a_permission_not_a_pause(amo: Amo) -> None:
    amo.fake.users_forbidden = True
    assert amo.client.user_names() == {}
    assert amo.client.account()["name"] == "Acme"


def test_402_is_one_clear_line(amo: Amo) -> None:
    amo.fake.fail_next("/api/v4/events", 402, "<html>Payment Required</html>")
    with pytest.raises(FatalError) as caught:
        amo.client.call_events(0, 10)
    assert str(caught.value) == "amoCRM answered 402 Payment Required: the account is not paid; renew it in amoCRM"
    assert amo.fake.count("/api/v4/events") == 1 and amo.sleeps == []


@pytest.mark.slow
def test_204_on_every_list_is_empty(amo: Amo) -> None:
    client = amo.client
    assert client.call_events(0, 10).events == []
    for plural in ("leads", "contacts", "companies", "customers"):
        assert client.call_notes(plural, [1, 2]) == {}
        assert client.entity_names(plural, [1, 2]) == {}
    assert client.user_names() == {}
    answers = amo.fake.requests_to("/api/v4/")
    assert len(answers) == 1 + 4 * 2 + 1  # one request each, every one a 204


def test_a_204_after_a_next_link_ends_the_list(amo: Amo) -> None:
    for n in range(150):
        amo.fake.add_call(entity_id=7000 + n, note_id=n + 1, duration=60, phone="+7999", link=None, created_at=5)
    amo.fake.empty_from_page = 2
    assert len(amo.client.call_events(0, 10).events) == 100
    assert amo.fake.count("/api/v4/events") == 2


def test_a_write_is_not_repeated_after_a_5xx_but_is_after_a_429(amo: Amo) -> None:
    """Writes (notes, tasks) go through the same choke point; only a refused one is repeated."""
    note = [{"entity_id": 7001, "note_type": "common", "params": {"text": "SalesBot"}}]
    amo.fake.fail_next("/api/v4/leads/notes", 500, "<html>oops</html>")
    with pytest.raises(TransientError, match="HTTP 500"):
        amo.client._request("POST", "/api/v4/leads/notes", json=note)
    amo.fake.fail_next("/api/v4/leads/notes", 429, HTML_429)
    answer = amo.client._request("POST", "/api/v4/leads/notes", json=note)
    assert answer is not None and len(answer["_embedded"]["notes"]) == 1
    assert len(amo.fake.created_notes) == 1 and amo.fake.count("/api/v4/leads/notes") == 3
