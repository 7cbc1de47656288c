"""Reading amoCRM's answers, and its lists around one item that makes an answer unreadable.

One poisoned item (JSON nested 100,000 deep, bytes that are not JSON, a page of the wrong
shape) makes the whole answer unreadable, and with it every other item it carries. Asking
again gets the same answer, so neither a retry nor a later cycle helps: the list is read
again in smaller parts until the poisoned item stands alone, and only it is set aside.

Contract:
- `read_body` reads at most `MAX_BODY_BYTES` of an answer; `decode` turns a body into a JSON
  object or raises `UnreadableAnswer` (not JSON, nested too deep, not an object): never a
  `RecursionError`, never unbounded memory. `embedded` is a page's list, or `UnreadableAnswer`
  when the page has the wrong shape.
- `read_positions` reads a paged list (`page`, `limit`) by position: an unreadable page is read
  again with half the limit, down to 1, keeping the positions, so every readable item is
  returned once with its position, and each position that is unreadable alone is returned as
  an `Unread` (its reason shows the start of what was served, cut). `read_ids` does the same
  for a list asked for by ids: an unreadable batch is asked for in halves, down to one id.
- An item unreadable alone is asked for once more after the rest was read: a passing fault (a
  proxy's page) is not taken for a poisoned item. More than `MAX_UNREADABLE` such items, and
  more of them than items read, and the list is unreadable as a whole (`UnreadableAnswer`
  propagates): a server answering garbage to everything costs a bounded number of requests,
  and nothing is set aside. (So more than `MAX_UNREADABLE` poisoned items in a row, before
  any readable one, cannot be told from a broken server: that read fails as a whole.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from salesbot_poller.errors import Unreadable
from salesbot_poller.services.amocrm_parse import clean_text, shown

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024  # a page of 250 leads with custom fields is ~1 MB
MAX_UNREADABLE = 5  # more poisoned items than this, and than good ones: the server is broken
KEPT_CHARS = 2000  # what a set-aside item keeps of its text
_CHUNK = 64 * 1024


def _too_many(unreadable: int, read: int) -> bool:
    return unreadable > MAX_UNREADABLE and unreadable > read


class UnreadableAnswer(Unreadable):
    """An answer that cannot be read; `body` is what was read of it (at most `MAX_BODY_BYTES`)."""

    def __init__(self, message: str, body: bytes = b"") -> None:
        super().__init__(message)
        self.body = body


def read_body(response: requests.Response) -> bytes | None:
    """The body of a streamed `response`, or None when it is larger than `MAX_BODY_BYTES`
    (then the connection is closed, not read to its end). Network errors propagate."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(_CHUNK):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            response.close()
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def decode(what: str, body: bytes | None) -> dict[str, Any]:
    """The JSON object in `body` (None: too large); `UnreadableAnswer` saying why otherwise."""
    if body is None:
        raise UnreadableAnswer(f"{what}: answer larger than {MAX_BODY_BYTES // 2**20} MB")
    try:
        parsed = json.loads(body)
    except RecursionError:  # a hostile or broken answer nested deeper than any parser goes
        raise UnreadableAnswer(f"{what}: answer is JSON nested too deep to read", body) from None
    except ValueError as exc:  # JSONDecodeError, or bytes that are not text
        raise UnreadableAnswer(f"{what}: answer is not JSON{_where(exc, body)}", body) from None
    if not isinstance(parsed, dict):
        raise UnreadableAnswer(f"{what}: answer is not a JSON object", body)
    return parsed


def _where(exc: ValueError, body: bytes) -> str:
    """Where a JSON text breaks, with a little of it, cut: ` (at char 345: '…')`."""
    pos = getattr(exc, "pos", None)
    if not isinstance(pos, int):
        return ""
    near = body[max(pos - 20, 0) : pos + 20].decode("utf-8", "replace")
    return f" (at char {pos}: {shown(near)})"


def embedded(what: str, body: dict[str, Any], key: str) -> list[Any]:
    """The page's `_embedded[key]` ([] when absent); `UnreadableAnswer` for the wrong shape."""
    inner = body.get("_embedded")
    if inner is None:
        return []
    if not isinstance(inner, dict):
        raise UnreadableAnswer(f"{what}: '_embedded' is {shown(inner)}, not an object")
    items = inner.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise UnreadableAnswer(f"{what}: '_embedded.{key}' is {shown(items)}, not a list")
    return items


def has_next(body: dict[str, Any]) -> bool:
    """Whether the page links a next one."""
    links = body.get("_links")
    return isinstance(links, dict) and bool(links.get("next"))


@dataclass(frozen=True)
class Unread:
    """A position of a list whose item cannot be read, even alone."""

    position: int
    reason: str
    text: str  # the item as served, cut to `KEPT_CHARS`, for a human to look at
    digest: str  # of the item as served: the same poisoned item read again has the same digest


def _item_bytes(body: bytes, key: str) -> bytes:
    """The one item of a page of one, as served: the text inside `"_embedded": {key: [...]}`
    when it can be found (amoCRM writes `_embedded` last), else the whole answer."""
    found = re.search(rb'"_embedded"\s*:\s*\{\s*"' + re.escape(key.encode()) + rb'"\s*:\s*\[', body)
    if found is None:
        return body
    tail = body[found.end() :].rstrip()
    for closer in (b"}", b"}", b"]"):  # the answer's, `_embedded`'s and the list's
        tail = tail.removesuffix(closer).rstrip()
    return tail


def _unread(position: int, exc: UnreadableAnswer, key: str) -> Unread:
    item = _item_bytes(exc.body, key) if exc.body else str(exc).encode()
    text = clean_text(item[: KEPT_CHARS * 4].decode("utf-8", "replace"))
    cut = text if len(text) <= KEPT_CHARS else text[: KEPT_CHARS - 1] + "…"
    # The reason shows what was served (its start, cut) unless it quotes it already.
    reason = str(exc) if "(at char" in str(exc) else f"{exc}: {shown(text)}"
    return Unread(position, reason, cut, hashlib.sha256(item).hexdigest()[:20])


Fetch = Callable[[int, int], dict[str, Any] | None]  # (page, limit) -> the page, None for 204


class _Positions:
    """One read of a paged list by position (see `read_positions`)."""

    def __init__(self, fetch: Fetch, what: str, key: str, limit: int) -> None:
        self.fetch, self.what, self.key, self.limit = fetch, what, key, limit
        self.items: dict[int, Any] = {}
        self.suspects: dict[int, UnreadableAnswer] = {}
        self.end: int | None = None  # the first position past the list, once a page showed it

    def page(self, page: int, limit: int) -> tuple[list[Any], bool]:
        body = self.fetch(page, limit)
        if body is None:  # 204: nothing there
            return [], False
        items = embedded(self.what, body, self.key)
        return items, bool(items) and has_next(body)

    def span(self, low: int, high: int, limit: int) -> None:
        """Read positions [low, high) in pages of `limit`; an unreadable page is read again
        with half the limit. Pages of a smaller limit need not align: items outside the span
        are dropped, so each position is taken from one page only."""
        pos = low
        while pos < high and (self.end is None or pos < self.end):
            page = pos // limit + 1
            start = (page - 1) * limit
            try:
                items, more = self.page(page, limit)
            except UnreadableAnswer as exc:
                if limit == 1:
                    self.suspect(pos, exc)
                else:
                    if limit == self.limit:
                        log.info("%s: page %d unreadable (%s): read again in smaller pages", self.what, page, exc)
                    self.span(pos, min(start + limit, high), limit // 2)
                pos = start + limit
                continue
            for position, item in enumerate(items, start):
                if pos <= position < high:
                    self.items.setdefault(position, item)
            if not more:
                self.end = start + len(items)
            pos = start + limit

    def suspect(self, position: int, exc: UnreadableAnswer) -> None:
        self.suspects[position] = exc
        if _too_many(len(self.suspects), len(self.items)):
            raise exc


def read_positions(
    fetch: Fetch, what: str, key: str, limit: int, max_pages: int
) -> tuple[list[tuple[int, Any]], list[Unread]]:
    """Every item of a paged list with its position (from 0, in the server's order), and the
    positions unreadable even alone (see the module's contract). `fetch(page, limit)` asks for
    one page; `limit` is the page size to start with."""
    reading = _Positions(fetch, what, key, limit)
    reading.span(0, max_pages * limit, limit)
    if reading.end is None:
        log.warning("%s: stopped after %d pages", what, max_pages)
    unread: list[Unread] = []
    for position, first in sorted(reading.suspects.items()):
        try:  # asked once more, now that the rest was read
            items, _ = reading.page(position + 1, 1)
        except UnreadableAnswer as exc:
            unread.append(_unread(position, exc, key))
            continue
        if items:
            reading.items.setdefault(position, items[0])
        log.info("%s: position %d read on a second try (first: %s)", what, position, first)
    return sorted(reading.items.items()), unread


def read_ids(read: Callable[[list[int]], list[Any]], ids: list[int]) -> tuple[list[Any], dict[int, str]]:
    """The items `read(ids)` returns, asking for the ids in halves when an answer is
    unreadable, down to one id; and the ids unreadable even alone, with the reason."""
    items: list[Any] = []
    suspects: dict[int, UnreadableAnswer] = {}

    def split(part: list[int]) -> None:
        try:
            items.extend(read(part))
            return
        except UnreadableAnswer as exc:
            if len(part) == 1:
                suspects[part[0]] = exc
                if _too_many(len(suspects), len(items)):
                    raise
                return
            if len(part) == len(ids):
                log.info("%s: read again in halves (%d ids)", exc, len(ids))
        half = len(part) // 2
        split(part[:half])
        split(part[half:])

    split(ids)
    unreadable: dict[int, str] = {}
    for item_id in suspects:
        try:  # asked once more, now that the rest was read
            items.extend(read([item_id]))
        except UnreadableAnswer as exc:
            unreadable[item_id] = str(exc)
    return items, unreadable
