"""Exactly-once delivery for every destination: plan, store, send, record each acceptance.

Contract:
- A `Planned` item has a unique `key` saying what goes where; a call's own card or alert is
  `call:<id>`. `Store.enqueue` stores planned items BEFORE anything is sent.
- One sender per row: `send` claims the row for its thread before anything leaves
  (`Store.claim_delivery`, leased like a call's claim), so a worker and the intake lane that
  both find it unsent never both send it; the other one gets `Taken` (a `Busy`: not now).
- `send(app, row, now)` sends what of a stored row is not yet accepted: message parts one by
  one, each part's message id committed right after Telegram accepts it (retried while the
  database is busy, never dropped), the part `keyboard_part` with the payload's `keyboard`
  (inline buttons); a document; or an amoCRM write (the created id committed
  right after amoCRM answers). The only window for a duplicate is a crash between the
  acceptance and that commit.
- Telegram's limits are kept per chat (`App.pacer`): a message waits for its chat's slot up
  to `patience` seconds, else `Busy` is raised; `urgent` (missed-call alerts) go first. A
  429 pauses that chat only, and is raised as `Busy` with Telegram's retry_after.
- `send_all` keeps going past a destination that fails transiently (see there);
  `send_pending(app, now, kinds)` sends the stored rows of `kinds` that are not done (the
  alerts' storm summary, follow-ups, reports), leaving what fails for the next pass.
- `send_scheduled(app, cycle, key, kind, plan)` sends a scheduled report (the digest, the
  weekly report, the budget notice) exactly once: stored under `key` before it is sent,
  planned only while that key is not stored.
- A call's rows other than its own message go out with `send_extras` once the call's own
  card or alert is delivered: each destination is retried on its own schedule (the row's
  `attempts`, `next_attempt_at`; `retry_extras` in the intake lane, `put_off`), never holds
  back another destination, and never marks the call anything. A kind whose rows are sent
  by their owner (batched across calls) is left to that owner by whoever collects the rows:
  delivery names no destination but "a chat" and "amoCRM" (kinds starting `amo_`).
- A row refused for good (`PermanentError`: bad markup, a 400 from amoCRM) is closed with its
  error and never retried; it never holds back the rest. Transient and fatal errors propagate.
- `DryRun` prints a planned item once per process instead of storing or sending it, its
  messages as the chat shows them (`services.telegram_text`), not their HTML.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import peewee

from salesbot_poller.domain import Destination, Planned
from salesbot_poller.errors import Busy, FatalError, PermanentError, TransientError
from salesbot_poller.pipeline.context import GIVE_UP_SECONDS, MAX_BACKOFF_SECONDS, App, Cycle
from salesbot_poller.services.telegram_text import file_lines, keyboard_line, plain_text
from salesbot_poller.store import Delivery
from salesbot_poller.store.claims import owner

log = logging.getLogger(__name__)

CRM_PREFIX = "amo_"  # every amoCRM write's kind (amo_note, amo_task, amo_fields): not a chat's message
OWN_KINDS = ("card", "alert")  # a call's own message, key `call:<id>`
WORKER_PATIENCE = 2.0  # a worker waits this long for a chat's slot, then does other work
TAKEN_RETRY_SECONDS = 1  # a row another lane is sending: its call looks again this soon


class Taken(Busy):
    """Another lane holds the row's claim and is sending it now: not this one's to send."""


def to_amocrm(kind: str) -> bool:
    """Whether rows of `kind` are amoCRM writes (their ids are amoCRM's, not Telegram messages)."""
    return kind.startswith(CRM_PREFIX)


def destination_of(row: Delivery) -> str:
    """ "amocrm", or the row's chat ("" for the default chat): what fails as one."""
    return "amocrm" if to_amocrm(row.kind) else row.chat_id or ""


def own_key(call_id: int) -> str:
    return f"call:{call_id}"


def as_planned(row: Delivery) -> Planned:
    """A stored row as the plan it came from (what a dry run prints)."""
    to = Destination(row.chat_id, row.thread_id) if row.chat_id else None
    payload = json.loads(row.payload_json)
    if "parts" in payload:  # what is still unsent
        payload = {"parts": payload["parts"][len(json.loads(row.sent_ids_json)) :]}
    return Planned(row.key, row.kind, to, payload, row.reply_to_key)


def first_message_id(app: App, key: str) -> int | None:
    """The first accepted message id of a delivery key (`call:<id>` included)."""
    row = app.store.find_delivery(key)
    ids = json.loads(row.sent_ids_json) if row else []
    return int(ids[0]) if ids else None


def _crm_post(app: App, path: str, body: Any) -> int:
    """POST to amoCRM; the id of the created note or task (`_embedded.<list>[0].id`)."""
    if app.crm is None:
        raise PermanentError("amoCRM writes are not available in this setup")
    answer = app.crm.post(path, body) or {}
    for items in (answer.get("_embedded") or {}).values():
        if isinstance(items, list) and items and isinstance(items[0], dict) and "id" in items[0]:
            return int(items[0]["id"])
    raise PermanentError(f"amoCRM POST {path}: the answer names no created id")


def _paced(app: App, chat: str, now: int, urgent: bool, patience: float, send: Callable[[], int]) -> int:
    """`send` one Telegram message in its chat's turn; a 429 pauses that chat only."""
    app.pacer.turn(chat, now, urgent, patience)
    try:
        return send()
    except Busy:
        raise
    except TransientError as exc:
        if exc.retry_after:  # Telegram's 429: this chat waits, the others go on
            app.pacer.pause(chat, now + int(exc.retry_after))
            raise Busy(f"{exc}; chat {chat} paused for {exc.retry_after:.0f} s", exc.retry_after) from None
        raise


def send(app: App, row: Delivery, now: int, *, urgent: bool = False, patience: float = WORKER_PATIENCE) -> None:
    """See the module contract. The row is claimed for this thread first (one sender per
    row: `Store.claim_delivery`); a row that another lane is sending raises `Taken`, one it
    finished meanwhile is left as it is."""
    me = owner()
    if not app.store.claim_delivery(row, me, now, app.config.poller.claim_lease_seconds):
        if row.done_at is not None:
            return  # sent (or given up) by another lane since it was read
        raise Taken(f"{row.kind} ({row.key}) is being sent by {row.claimed_by}", TAKEN_RETRY_SECONDS)
    try:
        _send_claimed(app, row, now, urgent=urgent, patience=patience)
    finally:
        try:
            app.store.release_delivery(row, me)
        except peewee.PeeweeException as exc:  # what was sent is recorded: only the claim stays
            log.warning(
                "%s (%s): its claim stays until this worker reaches the database again or the lease ends: %s",
                row.kind,
                row.key,
                " ".join(str(exc).split()),
            )


def _send_claimed(app: App, row: Delivery, now: int, *, urgent: bool, patience: float) -> None:
    store = app.store
    payload = json.loads(row.payload_json)
    sent: list[int] = json.loads(row.sent_ids_json)
    to = Destination(row.chat_id, row.thread_id) if row.chat_id else None
    chat = row.chat_id or app.config.telegram.chat_id
    reply_to = first_message_id(app, row.reply_to_key) if row.reply_to_key else None
    try:
        if to_amocrm(row.kind):
            if not sent:
                sent.append(_crm_post(app, payload["path"], payload["body"]))
        elif "parts" in payload:
            for index in range(len(sent), len(payload["parts"])):
                message = partial(app.notifier.send, payload["parts"][index], to, reply_to if index == 0 else None)
                if payload.get("keyboard") and index == payload.get("keyboard_part"):  # the card's buttons
                    message = partial(message, keyboard=[[tuple(b) for b in row] for row in payload["keyboard"]])
                sent.append(_paced(app, chat, now, urgent, patience, message))
                store.committed(partial(store.update_delivery, row, sent_ids_json=json.dumps(sent)))  # after acceptance
        elif "photo" in payload and not sent:  # a PNG kept as base64 (the weekly chart)
            png = base64.b64decode(payload["photo"])
            photo = partial(app.notifier.send_photo, png, payload["caption"], to, reply_to)
            sent.append(_paced(app, chat, now, urgent, patience, photo))
        elif not sent:
            data = payload["text"].encode("utf-8")
            document = partial(app.notifier.send_document, payload["filename"], data, payload["caption"], to, reply_to)
            sent.append(_paced(app, chat, now, urgent, patience, document))
    except PermanentError as exc:
        store.committed(
            partial(store.update_delivery, row, sent_ids_json=json.dumps(sent), done_at=now, error=str(exc))
        )
        log.error("%s (%s) given up: %s", row.kind, row.key, exc)
        return
    store.committed(partial(store.update_delivery, row, sent_ids_json=json.dumps(sent), done_at=now, error=None))
    log.info("%s (%s) delivered", row.kind, row.key)


def send_all(
    app: App, rows: Iterable[Delivery], now: int, *, urgent: bool = False, patience: float = WORKER_PATIENCE
) -> None:
    """`send` each row in order. A destination (a chat, or amoCRM) that fails transiently gets
    no more rows this time, so its messages keep their order; the others go on. Then the first
    transient error is raised."""
    failed: set[str] = set()
    first: TransientError | None = None
    for row in rows:
        destination = destination_of(row)
        if destination in failed:
            continue
        try:
            send(app, row, now, urgent=urgent, patience=patience)
        except TransientError as exc:
            failed.add(destination)
            first = first or exc
    if first is not None:
        raise first


def send_pending(
    app: App, now: int, kinds: tuple[str, ...], *, urgent: bool = False, patience: float = WORKER_PATIENCE
) -> None:
    """Send the stored rows of `kinds` not done yet (`send_all`); a transient failure waits
    for the next pass (logged), a fatal one propagates."""
    what = "/".join(kinds)
    try:
        send_all(app, app.store.pending(kinds=kinds), now, urgent=urgent, patience=patience)
    except Busy as exc:  # a chat's rate or a 429: the next pass tries again
        log.info("%s waiting: %s", what, exc)
    except TransientError as exc:
        log.warning("%s not all sent yet: %s", what, exc)


def send_scheduled(app: App, cycle: Cycle, key: str, kind: str, plan: Callable[[], list[Planned]]) -> None:
    """A scheduled report, exactly once: when `key` is stored already, only what of it is
    unsent goes (told already, or to be told again); else `plan()` (nothing: not due after
    all) is stored, then sent. In a dry run it is printed, planned once per process (a plan
    may cost a request), and nothing is recorded."""
    if app.dry_run is not None:
        if isinstance(app.dry_run, DryRun) and key in app.dry_run.shown:
            return
        app.dry_run.show(plan())
        return
    if app.store.find_delivery(key) is None:
        items = plan()
        if not items:
            return
        app.store.enqueue(items, None, cycle.now)
        log.info("%s stored (%s)", kind, key)
    send_pending(app, cycle.now, (kind,))


def send_extras(app: App, rows: Iterable[Delivery], now: int, patience: float = WORKER_PATIENCE) -> set[str]:
    """Send a delivered call's other rows (alert-chat copy, transcript, amoCRM note or task).

    Each destination stands on its own: a failure puts off only that destination's rows, on
    their own schedule (`put_off`), and is never raised, so it neither holds back anything
    else nor touches the call, whose own card or alert is already out. A destination that
    fails keeps its later rows back this time, so its messages keep their order. Returns the
    destinations that failed (`destination_of`).
    """
    failed: set[str] = set()
    held: set[str] = set()
    for row in rows:
        destination = destination_of(row)
        if destination in failed or destination in held:
            continue
        try:
            send(app, row, now, patience=patience)  # a chat's slot: as long as the call's own card waited
        except Taken:
            # Its sender keeps this destination's order; this lane sends nothing more there now.
            held.add(destination)
        except (TransientError, FatalError) as exc:
            failed.add(destination)
            put_off(app, row, now, exc)
    return failed


def retry_extras(app: App, now: int, *, leave: tuple[str, ...] = ()) -> set[str]:
    """The intake lane's pass over delivered calls' rows whose next try is due, but those of
    the kinds in `leave` (sent by their owner); a dry run prints them instead. Returns the
    destinations that failed."""
    rows = [row for row in app.store.due_extras(now) if row.kind not in leave]
    if app.dry_run is not None:
        app.dry_run.show([as_planned(row) for row in rows])
        return set()
    return send_extras(app, rows, now)


def put_off(app: App, row: Delivery, now: int, exc: Exception) -> None:
    """Try `row` again later (backoff as for calls), or give it up after `poller.max_attempts`
    or 24 h. A busy chat (`Busy`) costs no attempt."""
    poller = app.config.poller
    if isinstance(exc, Busy):
        app.store.update_delivery(row, next_attempt_at=now + int(exc.retry_after or 0) + 1)
        return
    attempts = row.attempts + 1
    where = "amoCRM" if to_amocrm(row.kind) else f"chat {row.chat_id or app.config.telegram.chat_id}"
    if attempts >= poller.max_attempts or now - row.created_at >= GIVE_UP_SECONDS:
        app.store.committed(
            partial(app.store.update_delivery, row, attempts=attempts, done_at=now, error=f"gave up: {exc}")
        )
        log.error("%s (%s) to %s given up after %d attempt(s): %s", row.kind, row.key, where, attempts, exc)
        return
    delay = min(poller.retry_delay_seconds * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
    if isinstance(exc, TransientError) and exc.retry_after:
        delay = max(delay, int(exc.retry_after) + 1)
    app.store.update_delivery(row, attempts=attempts, next_attempt_at=now + delay, error=str(exc))
    level = logging.ERROR if isinstance(exc, FatalError) else logging.WARNING
    log.log(
        level, "%s (%s) to %s failed: %s; next try in %d s (attempt %d)", row.kind, row.key, where, exc, delay, attempts
    )


def describe(item: Planned) -> str:
    """What a dry run prints for `item`."""
    where = "amoCRM" if to_amocrm(item.kind) else "default chat" if item.to is None else f"chat {item.to.chat_id}"
    if item.to and item.to.thread_id:
        where += f" topic {item.to.thread_id}"
    if item.reply_to_key:
        where += f", reply to {item.reply_to_key}"
    head = f"--- dry run: {item.kind} -> {where} [{item.key}]"
    if to_amocrm(item.kind):
        method = item.payload.get("method", "POST")
        return (
            f"{head}\n{method} {item.payload['path']}\n{json.dumps(item.payload['body'], ensure_ascii=False, indent=1)}"
        )
    if "parts" in item.payload:  # as the chat shows them (`telegram_text`), not the HTML sent
        parts = (f"{plain_text(p)}\n--- end of part {i + 1}" for i, p in enumerate(item.payload["parts"]))
        lines = [head, *parts]
    elif "photo" in item.payload:
        size = len(base64.b64decode(item.payload["photo"]))
        lines = [head, *file_lines(f"photo (PNG, {size} bytes)", item.payload["caption"])]
    else:
        text = item.payload["text"]
        kind = f"document {item.payload['filename']} ({len(text)} characters)"
        lines = [head, *file_lines(kind, item.payload["caption"])]
    keyboard = item.payload.get("keyboard") or []  # the card's buttons: rows of (text, data)
    markup = item.payload.get("reply_markup") or {
        "inline_keyboard": [[{"text": b[0]} for b in row] for row in keyboard]
    }
    buttons = keyboard_line(markup)
    return "\n".join([*lines, buttons] if buttons else lines)


@dataclass
class DryRun:
    """Prints planned items instead of sending them; each key once per process (any thread)."""

    out: Callable[[str], None] = print
    shown: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def show(self, items: Iterable[Planned]) -> None:
        with self._lock:
            for item in items:
                if item.key not in self.shown:
                    self.shown.add(item.key)
                    self.out(describe(item))
