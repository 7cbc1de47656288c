"""amoCRM API v4 client: call events, call notes, user and entity names.

Contract:
- Every request goes through `AmoClient._request`, the one choke point: it honours a pause
  (`throttle.AmoPause`), takes a slot of the process's `RateLimiter` (at most
  `amocrm.max_rps` requests in any rolling second), adds the bearer token (in a header,
  never in the URL), retries and decodes. Every request has a timeout.
- 204 No Content is an empty list. Error bodies may be HTML: never assumed to be JSON.
- An answer is read to at most `amocrm_lists.MAX_BODY_BYTES`; one that cannot be read (not
  JSON, nested too deep, not an object, too large) raises `UnreadableAnswer`, never retried
  in the cycle. Events and notes are read around it (`amocrm_lists`): an unreadable events
  page is read again in smaller pages down to the poisoned position, set aside as an
  `EventBatch.malformed` entry; an unreadable notes batch in halves down to the poisoned
  note, which maps to its reason. The rest of the page or batch is read as usual.
- 429, 5xx, timeouts and connection errors are retried with exponential backoff and jitter
  (tenacity), honouring `Retry-After` (or a JSON `retry_after`), for at most about 2
  minutes; then `TransientError` ends the caller's amoCRM work, and nothing is sent to
  amoCRM before the server's requested wait has passed.
- 401 triggers one token refresh (OAuth); a long-lived token, a refused refresh, 402 and
  403 raise `FatalError` with what the admin must do. A 403 also pauses every amoCRM call
  for 10 minutes, kept in the store so a restart honours it.
- Malformed events and notes never raise: they are returned with a reason naming the field
  (or, for one that cannot be read at all, its position in the window).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import requests
import tenacity

from salesbot_poller.domain import CallEvent, CallNote, EntityDetails, EventBatch
from salesbot_poller.errors import FatalError, PermanentError, TransientError
from salesbot_poller.services.amocrm_auth import REAUTHORISE, TokenSource
from salesbot_poller.services.amocrm_lists import (
    Unread,
    decode,
    embedded,
    has_next,
    read_body,
    read_ids,
    read_positions,
)
from salesbot_poller.services.amocrm_parse import (
    CALL_EVENT_TYPES,
    MAX_ID,
    clean_text,
    event_ref,
    parse_event,
    parse_note,
    raw_text,
)
from salesbot_poller.services.retry import bounded_retry
from salesbot_poller.services.throttle import AmoPause, RateLimiter

log = logging.getLogger(__name__)

EVENTS_PAGE_LIMIT = 100
NOTES_BATCH = 250
MAX_PAGES = 500  # a runaway `next` link must not loop forever
USERS_TTL_SECONDS = 3600
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD"})
RETRY_ATTEMPTS = 8  # 1+2+4+8+16+30+30 s of backoff: about 1.5 min, within the budget
RETRY_BUDGET_SECONDS = 120  # then the cycle ends; the next one resumes from the cursor
MAX_RETRY_AFTER_SECONDS = 3600  # a bogus Retry-After must not stop the bot for days
FORBIDDEN_PAUSE_SECONDS = 600  # after a 403 (IP may be blocked): keep off for 10 minutes
ID_FILTER = "filter[id][]"
# 250 nine-digit ids make a ~7.8 KB query: too close to the 8 KB request line many web
# servers accept. Batches are cut shorter when the query would pass this.
MAX_QUERY_CHARS = 6000


def _set_aside(unread: Unread, since: int, until: int) -> tuple[str, str, str | None]:
    """An events position unreadable even alone, as a malformed event: a stand-in id from the
    digest of what was served (read again in the next window's overlap, it is the same row,
    logged once), its position in the window, and the text served, cut."""
    where = f"at position {unread.position} of the window {since}..{until}"
    return f"unreadable-{unread.digest}", f"unreadable {where}: {unread.reason}", unread.text


class AmoForbidden(FatalError):
    """403: IP blocked, IP whitelist, or a method the token may not use."""


class AmoNotFound(FatalError):
    """404: a wrong base URL when the events or account route is missing."""


@contextmanager
def _one_entity_type(entity_type: str) -> Iterator[None]:
    """A 404 under /api/v4/<entity type> concerns that type (customers switched off, say),
    not the account: a `PermanentError` for those calls, never a stop for every cycle."""
    try:
        yield
    except AmoNotFound:
        raise PermanentError(f"amoCRM answered 404 for {entity_type}: not available in this account") from None


def _seconds(value: Any) -> float | None:
    """A wait in seconds from a number or a numeric string; None otherwise."""
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _retry_after(response: requests.Response, content: bytes, now: datetime) -> float | None:
    """The server's requested wait: `Retry-After` (seconds or an HTTP date), else a JSON
    `retry_after` in `content`. Bodies may be HTML, or hostile: nothing here raises."""
    header = response.headers.get("Retry-After", "").strip()
    if header:
        seconds = _seconds(header)
        if seconds is not None:
            return seconds
        try:
            return _seconds((parsedate_to_datetime(header) - now).total_seconds())
        except (TypeError, ValueError, IndexError):
            return None
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        return None
    return _seconds(body.get("retry_after")) if isinstance(body, dict) else None


def id_batches(ids: list[int]) -> Iterator[list[tuple[str, Any]]]:
    """`filter[id][]` parameters for `ids`: up to 250 a request, fewer when the query string
    would grow past `MAX_QUERY_CHARS`."""
    key = len(quote(ID_FILTER, safe="")) + 2  # the encoded name, "=" and "&"
    batch: list[tuple[str, Any]] = []
    size = 0
    for entity_id in ids:
        cost = key + len(str(entity_id))
        if batch and (len(batch) == NOTES_BATCH or size + cost > MAX_QUERY_CHARS):
            yield batch
            batch, size = [], 0
        batch.append((ID_FILTER, entity_id))
        size += cost
    if batch:
        yield batch


@dataclass(frozen=True)
class Pipeline:
    id: int
    name: str
    statuses: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class Directory:
    """What `AmoClient.directory` reads: ids and names for `[[profiles]]`."""

    pipelines: tuple[Pipeline, ...]
    users: tuple[tuple[int, str, int | None], ...]  # id, name, group id
    groups: dict[int, str]


def _usable_group(raw: Any) -> bool:
    return isinstance(raw, dict) and isinstance(raw.get("id"), int) and raw["id"] >= 0


def _group_of(user: dict[str, Any]) -> int | None:
    rights = user.get("rights")
    group = rights.get("group_id") if isinstance(rights, dict) else None
    return group if isinstance(group, int) and not isinstance(group, bool) and group >= 0 else None


def _usable_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


class _NotProcessed(TransientError):
    """The server cannot have acted on the request (429, connect timeout): safe to repeat
    even when the method is not idempotent."""


class AmoClient:
    """amoCRM API v4 for the pipeline (implements `domain.CallSource`).

    `limiter` is the process's one `RateLimiter`; `pause` (with the store behind it) keeps
    a 403's back-off across restarts. `sleep` and `retry_seconds` exist for tests.
    """

    def __init__(
        self,
        session: requests.Session,
        base_url: str,
        tokens: TokenSource,
        clock: Callable[[], datetime],
        *,
        timeout: tuple[float, float] = (10, 30),
        sleep: Callable[[float], None] | None = None,
        limiter: RateLimiter | None = None,
        pause: AmoPause | None = None,
        retry_seconds: float = RETRY_BUDGET_SECONDS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._tokens = tokens
        self._clock = clock
        self._timeout = timeout
        self._limiter = limiter or RateLimiter(7)
        self._pause = pause or AmoPause(clock)
        self._retrying = bounded_retry(attempts=RETRY_ATTEMPTS, max_seconds=retry_seconds, sleep=sleep)
        self._users: dict[int, str] = {}
        self._groups: dict[int, int | None] = {}
        self._users_at: float | None = None

    # --- transport ----------------------------------------------------------------------

    def get(self, path: str, params: dict[str, Any] | list[tuple[str, Any]] | None = None) -> dict[str, Any] | None:
        """GET a JSON document; None for 204. Retries transient failures, boundedly."""
        return self._request("GET", path, params=params)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        pause_on_403: bool = True,
    ) -> dict[str, Any] | None:
        """THE one way to amoCRM's API: pause check, rate limit, token (refresh), bounded
        retries, decoding. A non-idempotent `method` is retried only when the server cannot
        have acted on it (429, connect timeout). `pause_on_403=False` for routes where a 403
        means "not allowed for this token" rather than "IP blocked" (the users list)."""
        self._pause.check()
        retrying = self._retrying
        if method not in IDEMPOTENT_METHODS:
            retrying = retrying.copy(retry=tenacity.retry_if_exception_type(_NotProcessed))
        try:
            result: dict[str, Any] | None = retrying(self._attempt, method, path, params, json, pause_on_403)
        except TransientError as exc:
            if exc.retry_after:  # the server said when: nothing is sent before then, even next cycle
                self._pause.pause(exc.retry_after, f"amoCRM asked to retry after {exc.retry_after:g} s")
            raise
        return result

    def _attempt(self, method: str, path: str, params: Any, body: Any, pause_on_403: bool) -> dict[str, Any] | None:
        token = self._tokens.access_token()
        response, content = self._send(method, path, params, body, token)
        if response.status_code == 401:
            fresh = self._tokens.refresh(token)  # a FatalError saying what to do when it cannot
            response, content = self._send(method, path, params, body, fresh)
            if response.status_code == 401:
                raise FatalError(f"amoCRM rejected a freshly refreshed OAuth token (401): {REAUTHORISE}")
        return self._decode(method, path, response, content, pause_on_403)

    def _send(
        self, method: str, path: str, params: Any, body: Any, token: str
    ) -> tuple[requests.Response, bytes | None]:
        """The response and its body, read to at most `MAX_BODY_BYTES` (None past it)."""
        try:
            with self._limiter.slot():
                response = self._session.request(
                    method,
                    f"{self.base_url}{path}",
                    params=params,
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=self._timeout,
                    stream=True,  # read by `read_body`, which stops at the size cap
                )
            with response:
                return response, read_body(response)
        except requests.ConnectTimeout:
            raise _NotProcessed(f"amoCRM {method} {path}: ConnectTimeout") from None
        except requests.RequestException as exc:
            raise TransientError(f"amoCRM {method} {path}: {type(exc).__name__}") from None

    def _decode(
        self, method: str, path: str, response: requests.Response, content: bytes | None, pause_on_403: bool
    ) -> dict[str, Any] | None:
        status, what = response.status_code, f"amoCRM {method} {path}"
        if status == 204 or (status in (200, 201, 202) and content == b""):
            return None
        if status in (200, 201, 202):
            return decode(what, content)  # UnreadableAnswer: asked again, it answers the same
        content = content or b""  # an error page past the size cap: only its status counts
        if status == 429:
            wait = _retry_after(response, content, self._clock())
            raise _NotProcessed(f"{what}: HTTP 429 (rate limited)", retry_after=wait)
        if status >= 500:
            raise TransientError(f"{what}: HTTP {status}", retry_after=_retry_after(response, content, self._clock()))
        if status == 402:
            raise FatalError("amoCRM answered 402 Payment Required: the account is not paid; renew it in amoCRM")
        if status == 403:
            raise AmoForbidden(self._forbidden(path, pause_on_403))
        if status == 404:
            raise AmoNotFound(f"amoCRM answered 404 on {path}: check amocrm.base_url ({self.base_url})")
        raise PermanentError(f"{what}: HTTP {status}")

    def _forbidden(self, path: str, pause: bool) -> str:
        text = f"amoCRM answered 403 on {path}"
        if not pause:
            return f"{text}: this token may not use it"
        self._pause.pause(FORBIDDEN_PAUSE_SECONDS, f"HTTP 403 on {path}")
        return (
            f"{text}: the server's IP may be blocked (too many requests), or an IP whitelist or the "
            f"token's rights forbid it; amoCRM is not called again until {self._pause.until_text()}. "
            "To unblock: check the account is active and its IP whitelist admits this server, stop any "
            "other program using amoCRM from this IP, wait; if it persists, ask amoCRM support to "
            "unblock the server's IP"
        )

    def _pages(self, path: str, params: list[tuple[str, Any]], key: str, pause_on_403: bool = True) -> Iterator[Any]:
        """Every item of `_embedded[key]` over all pages, until an answer has no `next` link,
        or is 204. The next page is asked for by number on our own base URL, never at the
        `next` href, so the token never goes to a host named in an answer."""
        for page in range(1, MAX_PAGES + 1):
            body = self._request("GET", path, params=[*params, ("page", page)], pause_on_403=pause_on_403)
            if body is None:
                return
            items = embedded(f"amoCRM GET {path}", body, key)
            yield from items
            if not has_next(body) or not items:
                return
        log.warning("amoCRM %s: stopped after %d pages", path, MAX_PAGES)

    # --- CallSource ---------------------------------------------------------------------

    def account(self) -> dict[str, Any]:
        return self.get("/api/v4/account") or {}

    def directory(self) -> Directory:
        """The account's pipelines (with statuses), users (with their group) and user groups:
        what `[[profiles]]` name by id (`profiles` and `check`). Three requests and the
        users' pages; users are read afresh, not from the hour's cache."""
        self._users_at = None
        account = self.get("/api/v4/account", [("with", "users_groups")]) or {}
        raw_groups = (account.get("_embedded") or {}).get("users_groups") or []
        groups = {g["id"]: clean_text(str(g.get("name") or g["id"])) for g in raw_groups if _usable_group(g)}
        body = self.get("/api/v4/leads/pipelines") or {}
        pipelines = []
        for raw in (body.get("_embedded") or {}).get("pipelines") or []:
            if not isinstance(raw, dict) or not _usable_id(raw.get("id")):
                continue
            statuses = [
                (st["id"], clean_text(str(st.get("name") or st["id"])))
                for st in (raw.get("_embedded") or {}).get("statuses") or []
                if isinstance(st, dict) and _usable_id(st.get("id"))
            ]
            pipelines.append(Pipeline(raw["id"], clean_text(str(raw.get("name") or raw["id"])), tuple(statuses)))
        names, user_groups = self.user_names(), self.user_groups()
        users = tuple((uid, names[uid], user_groups.get(uid)) for uid in sorted(names))
        return Directory(tuple(pipelines), users, groups)

    def call_events(self, since: int, until: int) -> EventBatch:
        params = [
            ("filter[type]", ",".join(CALL_EVENT_TYPES)),
            ("filter[created_at][from]", since),
            ("filter[created_at][to]", until),
        ]
        path = "/api/v4/events"

        def fetch(page: int, limit: int) -> dict[str, Any] | None:
            return self._request("GET", path, params=[*params, ("limit", limit), ("page", page)])

        read, unread = read_positions(fetch, f"amoCRM GET {path}", "events", EVENTS_PAGE_LIMIT, MAX_PAGES)
        events: dict[str, CallEvent] = {}
        malformed = [_set_aside(u, since, until) for u in unread]
        for position, raw in read:
            try:
                event = parse_event(raw)
            except (ValueError, RecursionError) as exc:  # RecursionError: a value nested too deep to show
                ref, reason = event_ref(raw), str(exc) or type(exc).__name__
                if ref.startswith("unknown-"):  # no id to find it by: where it was
                    reason += f" (at position {position} of the window {since}..{until})"
                malformed.append((ref, reason, raw_text(raw)))
                continue
            events.setdefault(event.event_id, event)
        return EventBatch(sorted(events.values(), key=lambda e: (e.created_at, e.event_id)), malformed)

    def call_notes(self, entity_type: str, note_ids: list[int]) -> dict[int, CallNote | str]:
        """Notes by id, batched; a malformed note maps to the reason instead."""
        found: dict[int, CallNote | str] = {}

        def read(ids: list[int]) -> list[Any]:
            params = [*((ID_FILTER, i) for i in ids), ("limit", NOTES_BATCH)]
            with _one_entity_type(entity_type):
                return list(self._pages(f"/api/v4/{entity_type}/notes", params, "notes"))

        for batch in id_batches(note_ids):
            notes, unreadable = read_ids(read, [i for _, i in batch])
            for raw in notes:
                try:
                    note = parse_note(raw)
                except (ValueError, RecursionError) as exc:  # RecursionError: a value nested too deep
                    if isinstance(raw, dict) and _usable_id(raw.get("id")):
                        found[raw["id"]] = str(exc) or type(exc).__name__
                    continue
                found[note.note_id] = note
            for note_id, reason in unreadable.items():
                found.setdefault(note_id, f"unreadable in amoCRM's answer: {reason}")
        return found

    def user_names(self) -> dict[int, str]:
        """User id -> name, cached for an hour. A non-admin token (403) gives {}."""
        self._read_users()
        return self._users

    def user_groups(self) -> dict[int, int | None]:
        """User id -> group id (`rights.group_id`; None for none), from the same cached list."""
        self._read_users()
        return self._groups

    def _read_users(self) -> None:
        now = self._clock().timestamp()
        if self._users_at is not None and now - self._users_at < USERS_TTL_SECONDS:
            return
        try:
            users = list(self._pages("/api/v4/users", [("limit", 250)], "users", pause_on_403=False))
        except AmoForbidden:
            log.info("amoCRM users list is admin-only (403): managers are shown by id")
            users = []
        usable = [u for u in users if isinstance(u, dict) and _usable_id(u.get("id"))]
        self._users = {u["id"]: clean_text(u.get("name") or u["id"]) for u in usable}
        self._groups = {u["id"]: _group_of(u) for u in usable}
        self._users_at = now

    def entity_names(self, entity_type: str, ids: list[int]) -> dict[int, str]:
        return {i: details.name for i, details in self.entity_details(entity_type, ids).items()}

    def entity_details(self, entity_type: str, ids: list[int]) -> dict[int, EntityDetails]:
        """Name, and for leads pipeline and status, of each entity: one request per 250 ids."""
        found: dict[int, EntityDetails] = {}
        for batch in id_batches(ids):
            params = [*batch, ("limit", NOTES_BATCH)]
            with _one_entity_type(entity_type):
                pages = list(self._pages(f"/api/v4/{entity_type}", params, entity_type))
            for raw in pages:
                if isinstance(raw, dict) and _usable_id(raw.get("id")):
                    found[raw["id"]] = EntityDetails(
                        clean_text(raw.get("name") or ""),
                        raw["pipeline_id"] if _usable_id(raw.get("pipeline_id")) else None,
                        raw["status_id"] if _usable_id(raw.get("status_id")) else None,
                    )
        return found

    def entity_url(self, entity_type: str, entity_id: int) -> str:
        return f"{self.base_url}/{entity_type}/detail/{entity_id}"

    # --- writes (amocrm.write_back) -----------------------------------------------------

    def post(self, path: str, payload: Any) -> dict[str, Any] | None:
        """POST a JSON document (notes, tasks); the answer, or None for an empty one.

        Through `_request` like every call (throttle, token, pause), but repeated only when
        amoCRM cannot have acted on it (429, connect timeout): amoCRM has no idempotency key,
        so a repeat after a 5xx or a read timeout could create a second note. The caller's
        delivery retries those on a later cycle. A 403 is a `PermanentError` for this write only.
        """
        try:
            return self._request("POST", path, json=payload, pause_on_403=False)
        except AmoForbidden:
            # Reads work (the poll came first in the cycle), so this token may not write here:
            # that write fails, the bot goes on.
            raise PermanentError(
                f"amoCRM answered 403 on POST {path}: the integration may not write there; "
                "give it the rights or set amocrm.write_back = false"
            ) from None

    def patch(self, path: str, payload: Any) -> dict[str, Any] | None:
        """PATCH a JSON document (lead fields and tags); the answer, or None for an empty one.

        Repeated only when amoCRM cannot have acted on it (429, connect timeout), like `post`:
        the caller checks what a request that may have landed did before sending it again
        (`lead_fields`). A 403 is a `PermanentError` for this write only."""
        try:
            return self._request("PATCH", path, json=payload, pause_on_403=False)
        except AmoForbidden:
            raise PermanentError(
                f"amoCRM answered 403 on PATCH {path}: the integration may not edit leads; give it the "
                "rights or unset amocrm.score_field_id, amocrm.last_call_field_id and amocrm.tag_low_score"
            ) from None

    def leads(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        """Leads by id as amoCRM has them now (custom field values, tags); a deleted one is absent."""
        found: dict[int, dict[str, Any]] = {}
        for batch in id_batches(ids):
            for raw in self._pages("/api/v4/leads", [*batch, ("limit", NOTES_BATCH)], "leads"):
                if isinstance(raw, dict) and _usable_id(raw.get("id")):
                    found[raw["id"]] = raw
        return found

    def custom_fields(self, entity_type: str) -> list[dict[str, Any]]:
        """The account's custom fields of `entity_type` (plural): id, name, type, ..."""
        fields = self._pages(f"/api/v4/{entity_type}/custom_fields", [("limit", 250)], "custom_fields")
        return [field for field in fields if isinstance(field, dict)]
