"""Exactly-once delivery for every destination: plan, store, send, record each acceptance.

Contract:
- A `Planned` item has a unique `key` saying what goes where. `enqueue` stores planned items
  (an item whose key is stored already is left as it is), BEFORE anything is sent.
- `send(app, row, now)` sends what of a stored row is not yet accepted: message parts one by
  one, each part's message id committed right after Telegram accepts it; a document; or an
  amoCRM write (the created id committed right after amoCRM answers). The only window for a
  duplicate is a crash between the acceptance and that commit.
- `send_all` keeps going past a destination that fails transiently (see there).
- A row refused for good (`PermanentError`: bad markup, a 400 from amoCRM) is closed with its
  error and never retried; it never holds back the rest. Transient and fatal errors propagate.
- `DryRun` prints a planned item once per process instead of storing or sending it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from salesbot_poller.domain import Destination
from salesbot_poller.errors import PermanentError, TransientError
from salesbot_poller.store import Call, Delivery

if TYPE_CHECKING:
    from salesbot_poller.pipeline import App

log = logging.getLogger(__name__)

CRM_KINDS = frozenset({"amo_note", "amo_task"})


@dataclass(frozen=True)
class Planned:
    """One message, document or amoCRM write. `payload`: `{"parts": [html, ...]}`, or
    `{"filename", "caption", "text"}`, or `{"path", "body"}` for amoCRM. `reply_to_key`:
    `call:<id>` (that call's own message) or another item's key, in the same chat."""

    key: str
    kind: str
    to: Destination | None
    payload: dict[str, Any]
    reply_to_key: str | None = None


def enqueue(items: Iterable[Planned], call_id: int | None, now: int) -> None:
    for item in items:
        Delivery.insert(
            key=item.key,
            call_id=call_id,
            kind=item.kind,
            chat_id=item.to.chat_id if item.to else None,
            thread_id=item.to.thread_id if item.to else None,
            reply_to_key=item.reply_to_key,
            payload_json=json.dumps(item.payload, ensure_ascii=False),
            created_at=now,
        ).on_conflict_ignore().execute()


def pending(*, call_id: int | None = None, kinds: Iterable[str] | None = None) -> list[Delivery]:
    query = Delivery.select().where(Delivery.done_at.is_null())
    if call_id is not None:
        query = query.where(Delivery.call_id == call_id)
    if kinds is not None:
        query = query.where(Delivery.kind.in_(list(kinds)))
    return list(query.order_by(Delivery.id))


def as_planned(row: Delivery) -> Planned:
    """A stored row as the plan it came from (what a dry run prints)."""
    to = Destination(row.chat_id, row.thread_id) if row.chat_id else None
    return Planned(row.key, row.kind, to, json.loads(row.payload_json), row.reply_to_key)


def first_message_id(key: str) -> int | None:
    """The first accepted message id of `call:<id>` or of a delivery key."""
    if key.startswith("call:") and key.count(":") == 1:
        call = Call.get_or_none(Call.id == int(key.split(":")[1]))
        ids = call.message_ids if call else []
    else:
        row = Delivery.get_or_none(Delivery.key == key)
        ids = json.loads(row.sent_ids_json) if row else []
    return int(ids[0]) if ids else None


def _commit(row: Delivery, now: int, **fields: Any) -> None:
    Delivery.update(**fields).where(Delivery.id == row.id).execute()
    for name, value in fields.items():
        setattr(row, name, value)


def _crm_post(app: App, path: str, body: Any) -> int:
    """POST to amoCRM; the id of the created note or task (`_embedded.<list>[0].id`)."""
    if app.crm is None:
        raise PermanentError("amoCRM writes are not available in this setup")
    answer = app.crm.post(path, body) or {}
    for items in (answer.get("_embedded") or {}).values():
        if isinstance(items, list) and items and isinstance(items[0], dict) and "id" in items[0]:
            return int(items[0]["id"])
    raise PermanentError(f"amoCRM POST {path}: the answer names no created id")


def send(app: App, row: Delivery, now: int) -> None:
    """See the module contract."""
    payload = json.loads(row.payload_json)
    sent: list[int] = json.loads(row.sent_ids_json)
    to = Destination(row.chat_id, row.thread_id) if row.chat_id else None
    reply_to = first_message_id(row.reply_to_key) if row.reply_to_key else None
    try:
        if row.kind in CRM_KINDS:
            if not sent:
                sent.append(_crm_post(app, payload["path"], payload["body"]))
        elif "parts" in payload:
            for index in range(len(sent), len(payload["parts"])):
                message_id = app.notifier.send(payload["parts"][index], to, reply_to if index == 0 else None)
                sent.append(message_id)
                _commit(row, now, sent_ids_json=json.dumps(sent))  # right after acceptance
        elif not sent:
            data = payload["text"].encode("utf-8")
            sent.append(app.notifier.send_document(payload["filename"], data, payload["caption"], to, reply_to))
    except PermanentError as exc:
        _commit(row, now, sent_ids_json=json.dumps(sent), done_at=now, error=str(exc))
        log.error("%s (%s) given up: %s", row.kind, row.key, exc)
        return
    _commit(row, now, sent_ids_json=json.dumps(sent), done_at=now)
    log.info("%s (%s) delivered", row.kind, row.key)


def send_all(app: App, rows: Iterable[Delivery], now: int) -> None:
    """`send` each row in order. A destination (a chat, or amoCRM) that fails transiently gets
    no more rows this time, so its messages keep their order; the others go on. Then the first
    transient error is raised."""
    failed: set[str] = set()
    first: TransientError | None = None
    for row in rows:
        destination = "amocrm" if row.kind in CRM_KINDS else row.chat_id or ""
        if destination in failed:
            continue
        try:
            send(app, row, now)
        except TransientError as exc:
            failed.add(destination)
            first = first or exc
    if first is not None:
        raise first


def describe(item: Planned) -> str:
    """What a dry run prints for `item`."""
    where = "amoCRM" if item.kind in CRM_KINDS else "default chat" if item.to is None else f"chat {item.to.chat_id}"
    if item.to and item.to.thread_id:
        where += f" topic {item.to.thread_id}"
    if item.reply_to_key:
        where += f", reply to {item.reply_to_key}"
    head = f"--- dry run: {item.kind} -> {where} [{item.key}]"
    if item.kind in CRM_KINDS:
        return f"{head}\nPOST {item.payload['path']}\n{json.dumps(item.payload['body'], ensure_ascii=False, indent=1)}"
    if "parts" in item.payload:
        return "\n".join([head, *(f"{p}\n--- end of part {i + 1}" for i, p in enumerate(item.payload["parts"]))])
    text = item.payload["text"]
    return f"{head}\ndocument {item.payload['filename']} ({len(text)} characters), caption: {item.payload['caption']}"


@dataclass
class DryRun:
    """Prints planned items instead of sending them; each key once per process."""

    out: Callable[[str], None] = print
    shown: set[str] = field(default_factory=set)

    def show(self, items: Iterable[Planned]) -> None:
        for item in items:
            if item.key not in self.shown:
                self.shown.add(item.key)
                self.out(describe(item))
