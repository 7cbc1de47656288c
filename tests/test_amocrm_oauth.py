"""OAuth against the loopback amoCRM, whose refresh tokens and codes are single-use:
`auth --code`, rotation across processes, proactive refresh, and what a refused refresh
or a dead long-lived token does to a cycle."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from salesbot_poller.config import Config, load_config
from salesbot_poller.errors import FatalError
from salesbot_poller.services.amocrm import AmoClient
from salesbot_poller.services.amocrm_auth import STATE_KEY, OAuthTokens, exchange_code, jwt_expiry
from salesbot_poller.store import Call, Store
from tests.conftest import AMO_TOKEN, Servers, assert_no_secret, run_cli
from tests.fakes import make_jwt

OAUTH = {"client_id": "cid", "client_secret": "csecret", "redirect_uri": "https://bot.example/cb"}


def oauth_config(servers: Servers, **amocrm: str) -> Path:
    keys = OAUTH | amocrm
    lines = "\n".join(f'{k} = "{v}"' for k, v in keys.items())
    text = servers.config_text().replace(f'long_lived_token = "{AMO_TOKEN}"', lines)
    path = servers.tmp / "oauth.toml"
    path.write_text(text)
    return path


def stored(config: Path) -> dict[str, Any]:
    store = Store.open(load_config(config, {}).storage.database, 0)
    try:
        return json.loads(store.get_state(STATE_KEY) or "{}")
    finally:
        store.close()


def calls(config: Path) -> list[dict[str, Any]]:
    store = Store.open(load_config(config, {}).storage.database, 0)
    try:
        return list(Call.select().dicts())
    finally:
        store.close()


def oauth_responses(servers: Servers) -> int:
    return servers.amo.count("/oauth2/access_token")


# --- auth --code --------------------------------------------------------------------------


@pytest.mark.slow
def test_auth_code_stores_the_pair_and_says_what_to_do_next(servers: Servers) -> None:
    config = oauth_config(servers)
    servers.amo.valid_codes.add("code-1")
    done = run_cli("--config", str(config), "auth", "--code", "code-1")
    assert done.returncode == 0, done.stderr
    pair = stored(config)
    assert pair["refresh_token"] == "refresh-2" and pair["access_token"] == "access-2"
    assert f"salesbot-poller --config {config} check" in done.stdout
    assert "systemctl enable --now salesbot" in done.stdout
    for text in (done.stdout, done.stderr):
        assert "access-2" not in text and "refresh-2" not in text and "csecret" not in text
    body = servers.amo.requests_to("/oauth2/access_token")[0].json()
    assert body["grant_type"] == "authorization_code" and body["code"] == "code-1"
    assert body["redirect_uri"] == OAUTH["redirect_uri"] and body["client_id"] == "cid"
    # The next process uses the stored pair as it is: no refresh, no re-seeding.
    once = run_cli("once", config=config)
    assert once.returncode == 0, once.stderr
    assert oauth_responses(servers) == 1
    assert servers.amo.requests_to("/api/v4/events")[0].headers["authorization"] == "Bearer access-2"


@pytest.mark.slow
def test_a_spent_code_exits_3_with_one_line_and_keeps_the_stored_pair(servers: Servers) -> None:
    config = oauth_config(servers)
    servers.amo.valid_codes.add("code-1")
    assert run_cli("--config", str(config), "auth", "--code", "code-1").returncode == 0
    before = stored(config)
    again = run_cli("--config", str(config), "auth", "--code", "code-1")
    assert again.returncode == 3
    lines = [line for line in again.stderr.splitlines() if "authorization code" in line]
    assert len(lines) == 1 and "revoked" in lines[0] and "get a new one" in lines[0]
    assert stored(config) == before


def test_auth_needs_the_oauth_keys(servers: Servers) -> None:
    config = servers.write_config()  # a long-lived token, no OAuth
    done = run_cli("--config", str(config), "auth", "--code", "code-1")
    assert done.returncode == 2
    assert "amocrm.client_id: required for `auth`" in done.stderr
    assert "amocrm.long_lived_token: set, so OAuth is not used" in done.stderr
    assert_no_secret(done.stdout, done.stderr)


# --- rotation across processes ----------------------------------------------------------------


@pytest.mark.slow
def test_tokens_rotate_across_processes_in_sequence(servers: Servers) -> None:
    config = oauth_config(servers, refresh_token="refresh-1")
    # Child processes: nothing carries over from one run to the next but the database.
    first = run_cli("once", config=config, child=True)  # no access token yet: refresh-1 -> pair 2
    assert first.returncode == 0, first.stderr
    second = run_cli("once", config=config, child=True)  # the stored pair, not the spent refresh-1 again
    assert second.returncode == 0, second.stderr
    assert oauth_responses(servers) == 1
    servers.amo.valid_tokens.clear()  # the access token is revoked: 401, one refresh
    third = run_cli("once", config=config, child=True)
    assert third.returncode == 0, third.stderr
    assert servers.amo.issued_refresh_tokens == ["refresh-2", "refresh-3"]
    grants = [r.json()["refresh_token"] for r in servers.amo.requests_to("/oauth2/access_token")]
    assert grants == ["refresh-1", "refresh-2"]  # no refresh token was ever sent twice
    assert stored(config)["refresh_token"] == "refresh-3"


class StaleFirstRead:
    """A store whose first read returns what it held before another process refreshed."""

    def __init__(self, store: Store, stale: str | None) -> None:
        self._store, self._stale, self._first = store, stale, True

    def get_state(self, key: str) -> str | None:
        if key == STATE_KEY and self._first:
            self._first = False
            return self._stale
        return self._store.get_state(key)

    def set_state(self, key: str, value: str) -> None:
        self._store.set_state(key, value)

    def set_secret_state(self, key: str, value: str) -> None:
        self._store.set_secret_state(key, value)


def load(path: Path) -> tuple[Config, Store]:
    config = load_config(path, {})
    return config, Store.open(config.storage.database, 0)


def client(config: Config, tokens: Any, clock: Any = lambda: datetime.now(UTC)) -> AmoClient:
    return AmoClient(requests.Session(), config.amocrm.base_url, tokens, clock)


def test_a_refresh_refused_as_reused_takes_the_pair_another_process_stored(servers: Servers) -> None:
    config, store = load(oauth_config(servers, refresh_token="refresh-1"))
    OAuthTokens(config.amocrm, store, requests.Session(), datetime.now).access_token()  # seeds, refreshes
    seeded = json.dumps(
        {
            "access_token": "",
            "refresh_token": "refresh-1",
            "expires_at": 0,
            "seed": json.loads(store.get_state(STATE_KEY) or "{}")["seed"],
        }
    )
    rotated = store.get_state(STATE_KEY)
    # This process read the database before the other one committed pair 2.
    late = OAuthTokens(config.amocrm, StaleFirstRead(store, seeded), requests.Session(), datetime.now)  # type: ignore[arg-type]
    assert client(config, late).account()["name"] == "Acme"
    assert [r.json()["refresh_token"] for r in servers.amo.requests_to("/oauth2/access_token")] == [
        "refresh-1",
        "refresh-1",  # refused by the server: "Token has been revoked"
    ]
    assert servers.amo.requests_to("/api/v4/account")[0].headers["authorization"] == "Bearer access-2"
    assert store.get_state(STATE_KEY) == rotated


def test_a_refused_refresh_is_fatal_says_what_to_do_and_keeps_the_tokens(servers: Servers) -> None:
    config, store = load(oauth_config(servers, refresh_token="refresh-1"))
    tokens = OAuthTokens(config.amocrm, store, requests.Session(), datetime.now)
    tokens.access_token()
    before = store.get_state(STATE_KEY)
    servers.amo.valid_tokens.clear()
    servers.amo.valid_refresh_tokens.clear()  # the integration was revoked
    with pytest.raises(FatalError) as caught:
        client(config, tokens).account()
    assert "Token has been revoked" in str(caught.value) and "auth --code CODE" in str(caught.value)
    assert store.get_state(STATE_KEY) == before


# --- proactive refresh ------------------------------------------------------------------------


def test_refresh_shortly_before_the_jwt_expires(servers: Servers) -> None:
    servers.amo.jwt_tokens = True
    now = datetime.now(UTC).replace(microsecond=0)
    first = make_jwt({"exp": int(now.timestamp()) + 3600})
    servers.amo.valid_tokens.add(first)
    config, store = load(oauth_config(servers, refresh_token="refresh-1", access_token=first))
    clock = [now]
    amo = client(config, OAuthTokens(config.amocrm, store, requests.Session(), lambda: clock[0]), lambda: clock[0])
    amo.account()
    assert oauth_responses(servers) == 0  # an hour left: the configured token is used
    clock[0] = now + timedelta(seconds=3600 - 200)  # within the refresh margin
    amo.account()
    assert oauth_responses(servers) == 1
    used = [r.headers["authorization"].split()[1] for r in servers.amo.requests_to("/api/v4/account")]
    assert used[0] == first and used[1] != first and len(used) == 2  # no 401 on the way
    pair = json.loads(store.get_state(STATE_KEY) or "{}")
    assert pair["expires_at"] == jwt_expiry(used[1]) and pair["expires_at"] > time.time() + 80000


def test_without_a_jwt_the_stored_expires_in_decides(servers: Servers) -> None:
    config, store = load(oauth_config(servers, refresh_token="refresh-1"))
    now = datetime.now(UTC)
    clock = [now]
    amo = client(config, OAuthTokens(config.amocrm, store, requests.Session(), lambda: clock[0]), lambda: clock[0])
    amo.account()
    clock[0] = now + timedelta(hours=23)
    amo.account()
    assert oauth_responses(servers) == 1
    clock[0] = now + timedelta(seconds=86400 - 100)
    amo.account()
    assert oauth_responses(servers) == 2


def test_one_refresh_at_a_time(servers: Servers) -> None:
    config, store = load(oauth_config(servers, refresh_token="refresh-1"))
    store.close()  # each thread opens its own connection (peewee connections are per thread)
    tokens = OAuthTokens(config.amocrm, Store.open(config.storage.database, 0), requests.Session(), datetime.now)
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(tokens.access_token())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert got == ["access-2"] * 4 and oauth_responses(servers) == 1


# --- what a dead credential does to a cycle ---------------------------------------------------


@pytest.mark.slow
def test_a_refused_refresh_stops_once_with_one_line_and_marks_nothing(servers: Servers) -> None:
    now = int(time.time())
    servers.amo.add_call(entity_id=7001, note_id=1, duration=60, phone="+7999", link=None, created_at=now - 60)
    config = oauth_config(servers, refresh_token="refresh-1")
    assert run_cli("once", config=config).returncode == 0  # the call waits for its link
    servers.amo.valid_tokens.clear()
    servers.amo.valid_refresh_tokens.clear()
    before = calls(config)
    assert [c["stage"] for c in before] == ["new"]
    failed = run_cli("once", config=config)
    assert failed.returncode == 3
    lines = [line for line in failed.stderr.splitlines() if "refresh" in line]
    assert len(lines) == 1 and "auth --code CODE" in lines[0]
    assert calls(config) == before  # nothing was marked anything


def test_a_dead_long_lived_token_stops_once_with_one_line(servers: Servers) -> None:
    servers.amo.valid_tokens.clear()
    failed = run_cli("once", config=servers.write_config())
    assert failed.returncode == 3
    lines = [line for line in failed.stderr.splitlines() if "long-lived" in line]
    assert len(lines) == 1 and "create a new long-lived token" in lines[0]
    assert servers.amo.count("/api/v4/") == 1  # nothing else was tried
    assert_no_secret(failed.stdout, failed.stderr)


class CheckingSession(requests.Session):
    """Fails a request whose bearer token is not the one committed in the database."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store, self.seen = store, []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        token = kwargs["headers"]["Authorization"].split()[1]
        committed = json.loads(self.store.get_state(STATE_KEY) or "{}").get("access_token")
        assert token == committed, "a token was used before it was committed"
        self.seen.append(token)
        return super().request(method, url, *args, **kwargs)


def test_a_new_pair_is_committed_before_its_access_token_is_used(servers: Servers) -> None:
    config, store = load(oauth_config(servers, refresh_token="refresh-1"))
    tokens = OAuthTokens(config.amocrm, store, requests.Session(), datetime.now)
    session = CheckingSession(store)
    amo = AmoClient(session, config.amocrm.base_url, tokens, datetime.now)
    amo.account()
    servers.amo.valid_tokens.clear()
    amo.account()
    assert session.seen == ["access-2", "access-2", "access-3"]


def test_oauth_without_stored_tokens_says_to_run_auth(servers: Servers) -> None:
    config, store = load(oauth_config(servers))
    with pytest.raises(FatalError, match=r"no tokens stored yet: run `salesbot-poller auth --code CODE`"):
        client(config, OAuthTokens(config.amocrm, store, requests.Session(), datetime.now)).account()
    assert servers.amo.count() == 0


def test_a_wrong_client_secret_is_named_as_such(servers: Servers) -> None:
    config, store = load(oauth_config(servers, refresh_token="refresh-1", client_secret="wrong"))
    with pytest.raises(FatalError, match=r"check amocrm\.client_id and amocrm\.client_secret") as caught:
        client(config, OAuthTokens(config.amocrm, store, requests.Session(), datetime.now)).account()
    assert "wrong" not in str(caught.value)
    assert "refresh-1" in (store.get_state(STATE_KEY) or "")  # kept for when the secret is fixed


def test_auth_wins_over_an_old_refresh_token_left_in_the_config(servers: Servers) -> None:
    config, store = load(oauth_config(servers, refresh_token="refresh-1"))
    servers.amo.valid_codes.add("code-1")
    exchange_code(config.amocrm, store, requests.Session(), datetime.now, "code-1")
    assert OAuthTokens(config.amocrm, store, requests.Session(), datetime.now).access_token() == "access-2"
    assert oauth_responses(servers) == 1  # the config's refresh-1 was not used to re-seed
