"""amoCRM API v4 client: call events, call notes, user and entity names.

Contract:
- Every request has a timeout and carries the bearer token in a header, never in the URL.
- 204 No Content is an empty list. Error bodies may be HTML: never assumed to be JSON.
- 429, 5xx, timeouts and connection errors are retried a bounded number of times within the
  call, honouring `Retry-After` (or a JSON `retry_after`), then raised as `TransientError`.
- 401 triggers one token refresh (OAuth); otherwise 401/402/403 raise `FatalError` with
  what the admin must do.
- Malformed events and notes never raise: they are returned with a reason naming the field.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import requests

from salesbot_poller.amocrm_auth import TokenSource
from salesbot_poller.domain import ENTITY_PLURAL, CallEvent, CallNote, Direction, EventBatch
from salesbot_poller.errors import FatalError, PermanentError, TransientError
from salesbot_poller.retry import bounded_retry

log = logging.getLogger(__name__)

CALL_EVENT_TYPES: dict[str, Direction] = {"incoming_call": "in", "outgoing_call": "out"}
EVENTS_PAGE_LIMIT = 100
NOTES_BATCH = 250
MAX_PAGES = 500  # a runaway `next` link must not loop forever
USERS_TTL_SECONDS = 3600


class AmoForbidden(FatalError):
    """403: IP blocked, IP whitelist, or a method the token may not use."""


class AmoNotFound(FatalError):
    """404: a wrong base URL when the events or account route is missing."""


def parse_event(raw: Any) -> CallEvent:
    """Validate one raw event; raise ValueError naming the bad field."""
    if not isinstance(raw, dict):
        raise ValueError("event is not an object")
    event_id = raw.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("field 'id' is missing or not a string")
    direction = CALL_EVENT_TYPES.get(raw.get("type"))  # type: ignore[arg-type]
    if direction is None:
        raise ValueError(f"field 'type' is {raw.get('type')!r}, not a call event")
    plural = ENTITY_PLURAL.get(raw.get("entity_type"))  # type: ignore[arg-type]
    if plural is None:
        raise ValueError(f"field 'entity_type' is {raw.get('entity_type')!r}")
    entity_id, created_at = raw.get("entity_id"), raw.get("created_at")
    if not isinstance(entity_id, int) or isinstance(entity_id, bool):
        raise ValueError("field 'entity_id' is missing or not an integer")
    if not isinstance(created_at, int) or isinstance(created_at, bool):
        raise ValueError("field 'created_at' is missing or not an integer")
    try:
        note_id = raw["value_after"][0]["note"]["id"]
    except (KeyError, IndexError, TypeError):
        raise ValueError("field 'value_after[0].note.id' is missing") from None
    if not isinstance(note_id, int) or isinstance(note_id, bool):
        raise ValueError("field 'value_after[0].note.id' is not an integer")
    return CallEvent(event_id, direction, plural, entity_id, note_id, created_at)


def _optional_int(value: Any, field: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"field 'params.{field}' is {value!r}, not a number") from None


def parse_note(raw: Any) -> CallNote:
    """Validate one raw call note; raise ValueError naming the bad field."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), int):
        raise ValueError("note has no integer 'id'")
    if raw.get("note_type") not in ("call_in", "call_out"):
        raise ValueError(f"field 'note_type' is {raw.get('note_type')!r}, not call_in/call_out")
    params = raw.get("params")
    if not isinstance(params, dict):
        raise ValueError("field 'params' is missing")
    duration = _optional_int(params.get("duration"), "duration")
    link = params.get("link")
    responsible = params.get("call_responsible")
    return CallNote(
        note_id=raw["id"],
        duration=duration or 0,
        phone=str(params.get("phone") or ""),
        link=link.strip() if isinstance(link, str) and link.strip() else None,
        call_status=_optional_int(params.get("call_status"), "call_status"),
        source=str(params.get("source") or ""),
        responsible_user_id=_optional_int(raw.get("responsible_user_id"), "responsible_user_id"),
        call_responsible=None if responsible in (None, "") else str(responsible),
    )


@contextmanager
def _one_entity_type(entity_type: str) -> Iterator[None]:
    """A 404 under /api/v4/<entity type> concerns that type (customers switched off, say),
    not the account: a `PermanentError` for those calls, never a stop for every cycle."""
    try:
        yield
    except AmoNotFound:
        raise PermanentError(f"amoCRM answered 404 for {entity_type}: not available in this account") from None


def _retry_after(response: requests.Response) -> float | None:
    header = response.headers.get("Retry-After")
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            return None
    try:
        value = response.json().get("retry_after")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None


class AmoClient:
    """amoCRM API v4 for the pipeline (implements `domain.CallSource`)."""

    def __init__(
        self,
        session: requests.Session,
        base_url: str,
        tokens: TokenSource,
        clock: Callable[[], datetime],
        *,
        timeout: tuple[float, float] = (10, 30),
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._tokens = tokens
        self._clock = clock
        self._timeout = timeout
        self._retrying = bounded_retry(attempts=4, max_seconds=120, sleep=sleep)
        self._users: dict[int, str] = {}
        self._users_at: float | None = None

    # --- transport ----------------------------------------------------------------------

    def get(self, path: str, params: dict[str, Any] | list[tuple[str, Any]] | None = None) -> dict[str, Any] | None:
        """GET a JSON document; None for 204. Retries transient failures, boundedly."""
        result: dict[str, Any] | None = self._retrying(self._get_once, path, params)
        return result

    def _get_once(self, path: str, params: Any) -> dict[str, Any] | None:
        token = self._tokens.access_token()
        response = self._send(path, params, token)
        if response.status_code == 401:
            fresh = self._tokens.refresh(token)
            if fresh is None:
                raise FatalError(
                    "amoCRM rejected the long-lived token (401): it expired or was revoked; "
                    "create a new one in amoCRM and set amocrm.long_lived_token"
                )
            response = self._send(path, params, fresh)
            if response.status_code == 401:
                raise FatalError("amoCRM rejected a freshly refreshed OAuth token (401): re-authorise the integration")
        return self._decode(path, response)

    def _send(self, path: str, params: Any, token: str) -> requests.Response:
        try:
            return self._session.get(
                f"{self.base_url}{path}",
                params=params,
                headers={"Authorization": f"Bearer {token}"},
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise TransientError(f"amoCRM GET {path}: {type(exc).__name__}") from None

    def _decode(self, path: str, response: requests.Response) -> dict[str, Any] | None:
        status = response.status_code
        if status == 204 or (status == 200 and not response.content):
            return None
        if status == 200:
            try:
                body = response.json()
            except ValueError:
                raise TransientError(f"amoCRM GET {path}: answer is not JSON") from None
            if not isinstance(body, dict):
                raise TransientError(f"amoCRM GET {path}: answer is not a JSON object")
            return body
        if status == 429 or status >= 500:
            raise TransientError(f"amoCRM GET {path}: HTTP {status}", retry_after=_retry_after(response))
        if status == 402:
            raise FatalError("amoCRM answered 402 Payment Required: the account is not paid; renew it")
        if status == 403:
            raise AmoForbidden(
                f"amoCRM answered 403 on {path}: the server's IP may be blocked for exceeding "
                "7 requests/s (only amoCRM support lifts it), restricted by an IP whitelist, "
                "or the token lacks rights"
            )
        if status == 404:
            raise AmoNotFound(f"amoCRM answered 404 on {path}: check amocrm.base_url ({self.base_url})")
        raise PermanentError(f"amoCRM GET {path}: HTTP {status}")

    def _pages(self, path: str, params: list[tuple[str, Any]], key: str) -> Iterator[Any]:
        """Every item of `_embedded[key]` over all pages (until no `next` link, or 204)."""
        for page in range(1, MAX_PAGES + 1):
            body = self.get(path, [*params, ("page", page)])
            if body is None:
                return
            items = (body.get("_embedded") or {}).get(key) or []
            yield from items
            if not (body.get("_links") or {}).get("next") or not items:
                return
        log.warning("amoCRM %s: stopped after %d pages", path, MAX_PAGES)

    # --- CallSource ---------------------------------------------------------------------

    def account(self) -> dict[str, Any]:
        return self.get("/api/v4/account") or {}

    def call_events(self, since: int, until: int) -> EventBatch:
        params = [
            ("filter[type]", ",".join(CALL_EVENT_TYPES)),
            ("filter[created_at][from]", since),
            ("filter[created_at][to]", until),
            ("limit", EVENTS_PAGE_LIMIT),
        ]
        events: dict[str, CallEvent] = {}
        malformed: list[tuple[str, str]] = []
        for raw in self._pages("/api/v4/events", params, "events"):
            try:
                event = parse_event(raw)
            except ValueError as exc:
                raw_id = raw.get("id") if isinstance(raw, dict) else None
                malformed.append((str(raw_id or f"unknown-{len(malformed)}"), str(exc)))
                continue
            events.setdefault(event.event_id, event)
        return EventBatch(sorted(events.values(), key=lambda e: (e.created_at, e.event_id)), malformed)

    def call_notes(self, entity_type: str, note_ids: list[int]) -> dict[int, CallNote | str]:
        """Notes by id, batched; a malformed note maps to the reason instead."""
        found: dict[int, CallNote | str] = {}
        for start in range(0, len(note_ids), NOTES_BATCH):
            chunk = note_ids[start : start + NOTES_BATCH]
            params: list[tuple[str, Any]] = [("filter[id][]", i) for i in chunk]
            params.append(("limit", NOTES_BATCH))
            with _one_entity_type(entity_type):
                pages = list(self._pages(f"/api/v4/{entity_type}/notes", params, "notes"))
            for raw in pages:
                try:
                    note = parse_note(raw)
                except ValueError as exc:
                    if isinstance(raw, dict) and isinstance(raw.get("id"), int):
                        found[raw["id"]] = str(exc)
                    continue
                found[note.note_id] = note
        return found

    def user_names(self) -> dict[int, str]:
        """User id -> name, cached for an hour. A non-admin token (403) gives {}."""
        now = self._clock().timestamp()
        if self._users_at is not None and now - self._users_at < USERS_TTL_SECONDS:
            return self._users
        try:
            users = list(self._pages("/api/v4/users", [("limit", 250)], "users"))
        except AmoForbidden:
            log.info("amoCRM users list is admin-only (403): managers are shown by id")
            users = []
        self._users = {u["id"]: str(u.get("name") or u["id"]) for u in users if isinstance(u, dict) and "id" in u}
        self._users_at = now
        return self._users

    def entity_names(self, entity_type: str, ids: list[int]) -> dict[int, str]:
        names: dict[int, str] = {}
        for start in range(0, len(ids), NOTES_BATCH):
            params: list[tuple[str, Any]] = [("filter[id][]", i) for i in ids[start : start + NOTES_BATCH]]
            params.append(("limit", NOTES_BATCH))
            with _one_entity_type(entity_type):
                pages = list(self._pages(f"/api/v4/{entity_type}", params, entity_type))
            for raw in pages:
                if isinstance(raw, dict) and isinstance(raw.get("id"), int):
                    names[raw["id"]] = str(raw.get("name") or "")
        return names

    def entity_url(self, entity_type: str, entity_id: int) -> str:
        return f"{self.base_url}/{entity_type}/detail/{entity_id}"

    # --- writes (amocrm.write_back) -----------------------------------------------------

    def post(self, path: str, payload: Any) -> dict[str, Any] | None:
        """POST a JSON document (notes, tasks); the answer, or None for an empty one.

        One attempt, not retried here: amoCRM has no idempotency key, so a repeated POST after
        a timeout could create a second note. The caller's outbox retries on a later cycle.
        A 403 is a `PermanentError` for this write only (see below).
        """
        token = self._tokens.access_token()
        response = self._post_send(path, payload, token)
        if response.status_code == 401:
            fresh = self._tokens.refresh(token)
            if fresh is None:
                raise FatalError(
                    "amoCRM rejected the long-lived token (401): it expired or was revoked; "
                    "create a new one in amoCRM and set amocrm.long_lived_token"
                )
            response = self._post_send(path, payload, fresh)
        try:
            return self._decode(path, response)
        except AmoForbidden:
            # Reads work (the poll came first in the cycle), so this token may not write here:
            # that write fails, the bot goes on.
            raise PermanentError(
                f"amoCRM answered 403 on POST {path}: the integration may not write there; "
                "give it the rights or set amocrm.write_back = false"
            ) from None

    def _post_send(self, path: str, payload: Any, token: str) -> requests.Response:
        try:
            return self._session.post(
                f"{self.base_url}{path}",
                json=payload,
                headers={"Authorization": f"Bearer {token}"},
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise TransientError(f"amoCRM POST {path}: {type(exc).__name__}") from None
