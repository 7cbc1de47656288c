"""amoCRM credentials: a long-lived token, or OAuth 2.0 tokens rotated through the store.

Contract of `OAuthTokens`:
- Tokens live in the database (state key `amocrm_oauth`), seeded from the config the first
  time, and re-seeded when the admin puts a different refresh token in the config.
- A refresh persists the NEW pair (committed) before the new access token is used; amoCRM
  may treat a refresh token as single-use, so losing the new pair would lose the account.
- Refreshes are serialised within the process. After a refused refresh the store is read
  again (another process may have rotated the pair) before giving up.
- Stored tokens are never deleted on an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import requests

from salesbot_poller.config import AmoCRMConfig
from salesbot_poller.errors import FatalError, TransientError
from salesbot_poller.store import Store

log = logging.getLogger(__name__)

STATE_KEY = "amocrm_oauth"
REFRESH_MARGIN_SECONDS = 300  # refresh a little before expiry, not on the first 401


class TokenSource(Protocol):
    def access_token(self) -> str: ...

    def refresh(self, rejected: str) -> str | None:
        """A new access token after `rejected` got a 401, or None if none can be had."""
        ...


class LongLivedToken:
    """A long-lived token: nothing to refresh; a 401 means a human must create a new one."""

    def __init__(self, token: str) -> None:
        self._token = token

    def access_token(self) -> str:
        return self._token

    def refresh(self, rejected: str) -> str | None:
        return None


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class OAuthTokens:
    """OAuth 2.0 access/refresh tokens kept in the store; see the module contract."""

    def __init__(
        self,
        config: AmoCRMConfig,
        store: Store,
        session: requests.Session,
        clock: Callable[[], datetime],
        timeout: tuple[float, float] = (10, 30),
    ) -> None:
        self._config = config
        self._store = store
        self._session = session
        self._clock = clock
        self._timeout = timeout
        self._lock = threading.Lock()

    def _now(self) -> int:
        return int(self._clock().timestamp())

    def _load(self) -> dict[str, Any]:
        stored = self._store.get_state(STATE_KEY)
        data: dict[str, Any] = json.loads(stored) if stored else {}
        seed = self._config.refresh_token.get_secret_value()
        if seed and data.get("seed") != _digest(seed):
            # First start, or the admin pasted a new refresh token: the config wins once.
            data = {
                "access_token": self._config.access_token.get_secret_value(),
                "refresh_token": seed,
                "expires_at": 0 if not self._config.access_token.get_secret_value() else None,
                "seed": _digest(seed),
            }
            self._store.set_state(STATE_KEY, json.dumps(data))
        return data

    def access_token(self) -> str:
        with self._lock:
            data = self._load()
            expires_at = data.get("expires_at")
            token = str(data.get("access_token") or "")
            if token and (expires_at is None or expires_at - REFRESH_MARGIN_SECONDS > self._now()):
                return token
            return self._refresh_locked(data)

    def refresh(self, rejected: str) -> str | None:
        with self._lock:
            data = self._load()
            if data.get("access_token") and data["access_token"] != rejected:
                return str(data["access_token"])  # someone refreshed meanwhile
            return self._refresh_locked(data)

    def _refresh_locked(self, data: dict[str, Any]) -> str:
        refresh_token = str(data.get("refresh_token") or "")
        if not refresh_token:
            raise FatalError(
                "amoCRM OAuth: no refresh token stored: set amocrm.refresh_token (or use amocrm.long_lived_token)"
            )
        body = {
            "client_id": self._config.client_id,
            "client_secret": self._config.client_secret.get_secret_value(),
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "redirect_uri": self._config.redirect_uri,
        }
        try:
            response = self._session.post(
                f"{self._config.base_url}/oauth2/access_token", json=body, timeout=self._timeout
            )
        except requests.RequestException as exc:
            raise TransientError(f"amoCRM OAuth refresh: {type(exc).__name__}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(f"amoCRM OAuth refresh answered HTTP {response.status_code}")
        if response.status_code != 200:
            again = self._load()
            if again.get("refresh_token") and again["refresh_token"] != refresh_token:
                log.info("amoCRM OAuth: another process rotated the tokens; using the stored pair")
                return str(again.get("access_token") or "")
            hint = _hint(response)
            raise FatalError(
                f"amoCRM refused the OAuth refresh token (HTTP {response.status_code}{hint}): "
                "re-authorise the integration in amoCRM and set a new amocrm.refresh_token"
            )
        try:
            answer = response.json()
            new = {
                "access_token": str(answer["access_token"]),
                "refresh_token": str(answer["refresh_token"]),
                "expires_at": self._now() + int(answer.get("expires_in", 86400)),
                "seed": data.get("seed"),
            }
        except (ValueError, KeyError, TypeError):
            raise TransientError("amoCRM OAuth refresh: the answer has no access_token/refresh_token") from None
        self._store.set_state(STATE_KEY, json.dumps(new))  # committed before first use
        log.info("amoCRM OAuth: access token refreshed, valid for %s s", answer.get("expires_in", 86400))
        return str(new["access_token"])


def _hint(response: requests.Response) -> str:
    try:
        hint = response.json().get("hint")
    except ValueError:
        return ""
    return f", {hint}" if isinstance(hint, str) and hint else ""
