"""amoCRM credentials: a long-lived token, or OAuth 2.0 tokens rotated through the store.

Contract of `OAuthTokens`:
- Tokens live in the database (state key `amocrm_oauth`), put there by `exchange_code`
  (`salesbot-poller auth --code CODE`), or seeded from the config the first time and
  re-seeded when the admin puts a different refresh token in the config.
- The access token is refreshed shortly before it expires (the JWT's `exp`, else the
  answer's `expires_in`), and once after a 401.
- A refresh persists the NEW pair (committed) before the new access token is used; amoCRM
  may treat a refresh token as single-use, so losing the new pair would lose the account.
- Refreshes are serialised within the process. After a refused refresh the store is read
  again (another process may have rotated the pair) before giving up with a `FatalError`
  that says what the admin must do.
- Stored tokens are never deleted or overwritten on an error.
- Every token pair read or stored is added to the process's secret registry
  (`logs.add_secrets`) before it is used, so log lines and stored error texts never show a
  token, however recently rotated; the pair itself is stored with `set_secret_state`.
- Every request to amoCRM (refresh and code exchange too) takes a slot of the process's
  `RateLimiter`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Any, Protocol

import requests

from salesbot_poller.config import AmoCRMConfig
from salesbot_poller.domain import named_zone, time_text
from salesbot_poller.errors import FatalError, TransientError
from salesbot_poller.logs import add_secrets
from salesbot_poller.services.throttle import RateLimiter
from salesbot_poller.store import Store

log = logging.getLogger(__name__)

STATE_KEY = "amocrm_oauth"
REFRESH_MARGIN_SECONDS = 300  # refresh a little before expiry, not on the first 401
DEFAULT_EXPIRES_IN = 86400
REAUTHORISE = (
    "authorise the integration again: run `salesbot-poller auth --code CODE` with a new "
    "authorization code from the integration's settings in amoCRM (the stored tokens are kept)"
)


class TokenSource(Protocol):
    def access_token(self) -> str: ...

    def refresh(self, rejected: str) -> str:
        """A new access token after `rejected` got a 401; `FatalError` (saying what the admin
        must do) when none can be had."""
        ...


def jwt_expiry(token: str) -> int | None:
    """The `exp` claim of a JWT, read WITHOUT verifying it (only to plan a refresh)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:  # binascii.Error, UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return int(exp)
    return None


class LongLivedToken:
    """A long-lived token: nothing to refresh; a 401 means a human must create a new one
    (told when it expired, in `tz`: the account's zone)."""

    def __init__(self, token: str, tz: tzinfo | None = UTC) -> None:
        self._token = token
        self._tz = tz

    def access_token(self) -> str:
        return self._token

    def refresh(self, rejected: str) -> str:
        exp = jwt_expiry(self._token)
        when = f" (it was valid until {time_text(exp, self._tz)})" if exp else ""
        raise FatalError(
            f"amoCRM rejected the long-lived token (401): it expired or was revoked{when}; "
            "create a new long-lived token in amoCRM (the integration's settings, Keys and access) "
            "and set amocrm.long_lived_token"
        )


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _hint(response: requests.Response) -> str:
    try:
        hint = response.json().get("hint")
    except (ValueError, AttributeError):  # HTML, or JSON that is not an object
        return ""
    return f", {hint}" if isinstance(hint, str) and hint else ""


def _post_token(
    session: requests.Session,
    limiter: RateLimiter,
    config: AmoCRMConfig,
    grant: dict[str, str],
    timeout: tuple[float, float],
) -> requests.Response:
    """POST /oauth2/access_token with the client's credentials and `grant`."""
    body = {
        "client_id": config.client_id,
        "client_secret": config.client_secret.get_secret_value(),
        "redirect_uri": config.redirect_uri,
        **grant,
    }
    try:
        with limiter.slot():
            response = session.post(f"{config.base_url}/oauth2/access_token", json=body, timeout=timeout)
    except requests.RequestException as exc:
        raise TransientError(f"amoCRM OAuth: {type(exc).__name__}") from None
    if response.status_code >= 500 or response.status_code == 429:
        raise TransientError(f"amoCRM OAuth answered HTTP {response.status_code}")
    return response


def _remember(pair: dict[str, Any]) -> dict[str, Any]:
    """`pair`, its tokens registered as secrets (see the module contract)."""
    add_secrets(str(pair.get(key) or "") for key in ("access_token", "refresh_token"))
    return pair


def _new_pair(response: requests.Response, now: int, seed: str | None) -> dict[str, Any]:
    """The stored form of a token answer; `TransientError` when it is not one."""
    try:
        answer = response.json()
        access, refresh = str(answer["access_token"]), str(answer["refresh_token"])
        expires_in = int(answer.get("expires_in") or DEFAULT_EXPIRES_IN)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise TransientError("amoCRM OAuth: the answer has no access_token/refresh_token") from None
    expires_at = jwt_expiry(access) or now + expires_in
    return _remember({"access_token": access, "refresh_token": refresh, "expires_at": expires_at, "seed": seed})


def exchange_code(
    config: AmoCRMConfig,
    store: Store,
    session: requests.Session,
    clock: Callable[[], datetime],
    code: str,
    *,
    limiter: RateLimiter | None = None,
    timeout: tuple[float, float] = (10, 30),
) -> int:
    """Exchange an authorization code for a token pair and store it, as a refresh would.

    Returns when the access token expires (Unix time). A refused code is a `FatalError`
    saying what to do; nothing stored is touched then.
    """
    grant = {"grant_type": "authorization_code", "code": code}
    response = _post_token(session, limiter or RateLimiter(config.max_rps), config, grant, timeout)
    if response.status_code != 200:
        raise FatalError(
            f"amoCRM refused the authorization code (HTTP {response.status_code}{_hint(response)}): "
            "a code is single-use and lives 20 minutes; get a new one from the integration's settings "
            "in amoCRM and check amocrm.client_id, client_secret and redirect_uri"
        )
    seed = config.refresh_token.get_secret_value()
    # The config's refresh token (if any) is marked as already used, so it cannot override
    # the new pair at the next start.
    pair = _new_pair(response, int(clock().timestamp()), _digest(seed) if seed else None)
    store.set_secret_state(STATE_KEY, json.dumps(pair))
    log.info("amoCRM OAuth: authorised; tokens stored in the database")
    return int(pair["expires_at"])


class OAuthTokens:
    """OAuth 2.0 access/refresh tokens kept in the store; see the module contract."""

    def __init__(
        self,
        config: AmoCRMConfig,
        store: Store,
        session: requests.Session,
        clock: Callable[[], datetime],
        timeout: tuple[float, float] = (10, 30),
        *,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._session = session
        self._clock = clock
        self._timeout = timeout
        self._limiter = limiter or RateLimiter(config.max_rps)
        self._lock = threading.Lock()

    def _now(self) -> int:
        return int(self._clock().timestamp())

    def _load(self) -> dict[str, Any]:
        stored = self._store.get_state(STATE_KEY)
        data: dict[str, Any] = json.loads(stored) if stored else {}
        seed = self._config.refresh_token.get_secret_value()
        if seed and data.get("seed") != _digest(seed):
            # First start, or the admin pasted a new refresh token: the config wins once.
            access = self._config.access_token.get_secret_value()
            data = {
                "access_token": access,
                "refresh_token": seed,
                "expires_at": jwt_expiry(access) if access else 0,
                "seed": _digest(seed),
            }
            self._store.set_secret_state(STATE_KEY, json.dumps(data))
        return _remember(data)

    def _expires_at(self, data: dict[str, Any]) -> int | None:
        expires_at = data.get("expires_at")
        if isinstance(expires_at, int):
            return expires_at
        return jwt_expiry(str(data.get("access_token") or ""))  # None: unknown, used until a 401

    def access_token(self) -> str:
        """The stored access token, refreshed first when it expires within a few minutes."""
        with self._lock:
            data = self._load()
            token = str(data.get("access_token") or "")
            expires_at = self._expires_at(data)
            if token and (expires_at is None or expires_at - REFRESH_MARGIN_SECONDS > self._now()):
                return token
            return self._refresh_locked(data)

    def refresh(self, rejected: str) -> str:
        with self._lock:
            data = self._load()
            if data.get("access_token") and data["access_token"] != rejected:
                return str(data["access_token"])  # someone refreshed meanwhile
            return self._refresh_locked(data)

    def _refresh_locked(self, data: dict[str, Any]) -> str:
        refresh_token = str(data.get("refresh_token") or "")
        if not refresh_token:
            raise FatalError(
                "amoCRM OAuth: no tokens stored yet: run `salesbot-poller auth --code CODE` with an "
                "authorization code from the integration's settings in amoCRM"
            )
        grant = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        response = _post_token(self._session, self._limiter, self._config, grant, self._timeout)
        if response.status_code != 200:
            again = self._load()
            if again.get("refresh_token") and again["refresh_token"] != refresh_token:
                log.info("amoCRM OAuth: another process rotated the tokens; using the stored pair")
                return str(again.get("access_token") or "")
            status = f"HTTP {response.status_code}{_hint(response)}"
            if response.status_code == 401:
                raise FatalError(
                    f"amoCRM rejected the integration's credentials ({status}): "
                    "check amocrm.client_id and amocrm.client_secret"
                )
            raise FatalError(f"amoCRM refused the OAuth refresh token ({status}): {REAUTHORISE}")
        new = _new_pair(response, self._now(), data.get("seed"))
        self._store.set_secret_state(STATE_KEY, json.dumps(new))  # committed before first use
        expires = time_text(int(new["expires_at"]), named_zone(self._config.timezone))
        log.info("amoCRM OAuth: access token refreshed, valid until %s", expires)
        return str(new["access_token"])
