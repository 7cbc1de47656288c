"""`salesbot-poller forget --phone NUMBER [--yes]`: remove one person's data on request.

Contract of `forget(store, number, now, out, confirm, ...)`:
- It finds every call with that number (`phones.key`: `8 (916) 123-45-67` finds a call
  noted as `79161234567`, as follow-ups and `poller.exclude_phones` compare), and every call
  an earlier `forget` of it cleared (kept as `Call.forgotten_as`, a keyed hash of the key's
  last 10 digits, what earlier versions hashed: the number itself is gone), and prints them
  by id and date with how many messages each has. The number is never printed or logged in full
  (`mask`: `***-**-04`).
- Nothing left to remove (a second run): it says so and returns `ForgetOutcome.NOTHING`.
- Otherwise it asks `confirm`; declined -> nothing is written, `ForgetOutcome.DECLINED`.
- Then, in ONE transaction (`Store.clear_personal`): transcripts, the analyses' quotes and
  paraphrases, the content of every stored message about those calls (and of summaries that
  quote the number), recording links, entity names and the number go; a call not delivered
  yet is skipped. Recordings of those calls left in `storage.audio_dir`, and the audio kept for
  their quote clips (with the clips' Telegram file ids), are deleted.
- With an `eraser` (`telegram.delete_on_forget = true`) it then deletes the bot's own
  Telegram messages about those calls sent in the last 48 hours (Telegram's limit); older
  ones are not tried and are listed as such; a refused delete is listed too. Each deletion,
  and each refusal for good, is recorded, so a later run does not try it again.
- A call a worker holds right now is left alone and named: run `forget` again shortly
  (`ForgetOutcome.BUSY`).
- One log line sums it up, without the number in full.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Protocol

import peewee

from salesbot_poller.cli.common import (
    EXIT_CHECK_FAILED,
    EXIT_CONFIG,
    EXIT_OK,
    confirmed,
    err,
    redacting_out,
    utc_now,
    when_text,
    zone,
)
from salesbot_poller.config import Config
from salesbot_poller.errors import ConfigError, PermanentError, SalesbotError
from salesbot_poller.phones import is_full, key
from salesbot_poller.pipeline.delivery import to_amocrm
from salesbot_poller.services.clip_files import delete_clips
from salesbot_poller.store import Call, Delivery, Store

log = logging.getLogger(__name__)

SALT_KEY = "forget_salt"
DELETE_WINDOW_SECONDS = 48 * 3600 - 300  # Telegram's 48 hours, less a margin for the clock
REASON = "personal data removed by `forget`"
DIRECTIONS = {"in": "incoming", "out": "outgoing"}


class ForgetOutcome(Enum):
    DONE = "done"
    NOTHING = "nothing left to remove"
    DECLINED = "declined"
    BUSY = "a call is being processed"
    INCOMPLETE = "Telegram failed: worth another run"


class MessageEraser(Protocol):
    """Deletes one of the bot's Telegram messages (`TelegramNotifier.delete`)."""

    def delete(self, chat_id: str, message_id: int) -> None: ...


def mask(digits: str) -> str:
    """The number as it may be printed and logged: its last two digits only."""
    return f"***-**-{digits[-2:]}"


def number_key(store: Store, digits: str) -> str:
    """A keyed hash of `digits` (the key is this database's own, made on first use): what a
    forgotten call keeps so that the same number finds it again."""
    salt = store.get_state(SALT_KEY)
    if salt is None:
        salt = secrets.token_hex(32)
        store.set_secret_state(SALT_KEY, salt)
    return hmac.new(bytes.fromhex(salt), digits.encode(), hashlib.sha256).hexdigest()[:32]


@dataclass
class Message:
    """One message the bot sent about a call, with the row that recorded it."""

    row: Delivery
    chat_id: str
    message_id: int
    sent_at: int


@dataclass
class Plan:
    """What is left to remove about the calls found."""

    calls: list[Call]
    rows: dict[int, list[Delivery]]  # call id -> its delivery rows
    messages: list[Message] = field(default_factory=list)  # in Telegram, not deleted yet
    refused_before: list[Message] = field(default_factory=list)  # an earlier run could not delete them

    def holds_data(self, call: Call) -> bool:
        """Whether `call` still holds anything `forget` removes (its analysis is judged by
        `personal_removed_at`: once cleared, what it keeps is not personal)."""
        fields = (call.transcript, call.link, call.phone, call.entity_name, call.audio_path, call.outbox_json)
        unblanked = any(row.removed_at is None for row in self.rows.get(call.id, []))
        return call.personal_removed_at is None or any(fields) or unblanked

    def deletable(self, now: int) -> list[Message]:
        return [m for m in self.messages if now - m.sent_at < DELETE_WINDOW_SECONDS]

    def too_old(self, now: int) -> list[Message]:
        return [m for m in self.messages if now - m.sent_at >= DELETE_WINDOW_SECONDS]


def plan(store: Store, calls: list[Call], default_chat: str, telegram: bool) -> Plan:
    rows: dict[int, list[Delivery]] = {}
    for row in store.deliveries_of(call.id for call in calls):
        rows.setdefault(int(row.call_id or 0), []).append(row)
    found = Plan(calls, rows)
    if telegram:
        for call in calls:
            for row in rows.get(call.id, []):
                if to_amocrm(row.kind):
                    continue
                payload = json.loads(row.payload_json)
                deleted, refused = set(payload.get("deleted", [])), set(payload.get("refused", []))
                sent_at = int(row.done_at or row.created_at)
                for message_id in json.loads(row.sent_ids_json):
                    message = Message(row, row.chat_id or default_chat, int(message_id), sent_at)
                    if message_id in refused:
                        found.refused_before.append(message)
                    elif message_id not in deleted:
                        found.messages.append(message)
    return found


def remove_audio(directory: Path, call_ids: list[int]) -> int:
    """Delete what is left in `directory` of the recordings of `call_ids`, and their quote
    clips' audio (`clip_files`: one per call); how many files (a call's clip audio counts one)."""
    removed = delete_clips(directory, call_ids)
    for call_id in call_ids:
        for path in directory.glob(f"call-{call_id}.*"):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def forget(
    store: Store,
    number: str,
    now: int,
    out: Callable[[str], None],
    confirm: Callable[[str], bool],
    *,
    audio_dir: Path,
    default_chat: str,
    eraser: MessageEraser | None = None,
    tz: tzinfo | None = None,
) -> ForgetOutcome:
    """See the module contract. Raises `ValueError` for a number with fewer than 7 digits."""
    digits = key(number)
    if not is_full(digits):
        raise ValueError("--phone: give the number (at least 7 digits), e.g. +7 999 111-00-04")
    who = mask(digits)
    # The hash keeps its old input, the last 10 digits (a +7 key's are exactly those): a
    # number forgotten by an earlier version is still found.
    forgotten_as = number_key(store, digits[-10:])
    found = store.calls_with_number(key, digits, forgotten_as)
    busy = [call for call in found if call.claimed_by]
    calls = [call for call in found if not call.claimed_by]
    if not found:
        out(f"forget: {who}: no call with this number")
        log.info("forget: %s: no call found", who)
        return ForgetOutcome.NOTHING
    work = plan(store, calls, default_chat, eraser is not None)
    out(f"forget: {who}: {len(found)} call(s) with this number:")
    for call in found:
        rows = work.rows.get(call.id, [])
        state = (
            "being processed now: run `forget` again in a minute"
            if call.claimed_by
            else "personal data left"
            if work.holds_data(call)
            else "already cleared"
        )
        out(
            f"  call {call.id} · {when_text(call.event_created_at, tz)} · {DIRECTIONS.get(call.direction)} · "
            f"{call.entity_type}/{call.entity_id} · {len(rows)} message(s) · {state}"
        )
    to_clear = [call for call in calls if work.holds_data(call)]
    deletable, too_old = work.deletable(now), work.too_old(now)
    if not to_clear and not deletable:
        out(f"forget: {who}: nothing left to remove")
        _report_old(out, too_old, tz)
        for message in work.refused_before:
            out(
                f"  could not delete (refused by Telegram earlier): message {message.message_id} "
                f"in chat {message.chat_id}"
            )
        log.info("forget: %s: %d call(s) found, nothing left to remove", who, len(found))
        return ForgetOutcome.BUSY if busy else ForgetOutcome.NOTHING
    blank = sum(1 for call in to_clear for row in work.rows.get(call.id, []) if row.removed_at is None)
    out(
        f"forget: will remove from {len(to_clear)} call(s): transcripts, analysis quotes and summaries, "
        f"recording links, names and the number; the text of {blank} stored message(s)"
    )
    if eraser is not None:
        out(
            f"forget: will delete {len(deletable)} Telegram message(s) sent in the last 48 h"
            + (f"; {len(too_old)} older one(s) cannot be deleted" if too_old else "")
        )
    else:
        out("forget: messages already in Telegram stay (telegram.delete_on_forget = false)")
    if not confirm(f"Remove the personal data of {len(to_clear)} call(s)?"):
        out("forget: not confirmed: nothing removed")
        return ForgetOutcome.DECLINED
    _, blanked = store.clear_personal(calls, now, REASON, forgotten_as=forgotten_as)
    files = remove_audio(audio_dir, [call.id for call in calls])
    try:
        reclaimed = store.reclaim_space()
    except peewee.DatabaseError as failure:  # the rows are cleared; the space comes back later
        reclaimed = f"space not reclaimed now ({type(failure).__name__})"
    out(
        f"forget: {who}: {len(to_clear)} call(s) cleared, {blanked} stored message(s) blanked, "
        f"{files} audio file(s) deleted"
    )
    deleted, refused = (0, []) if eraser is None else _delete(store, eraser, deletable)
    if eraser is not None:
        out(f"forget: {deleted} Telegram message(s) deleted")
        for message, exc in refused:
            out(f"  could not delete message {message.message_id} in chat {message.chat_id} ({exc})")
        _report_old(out, too_old, tz)
        log.info(
            "forget: %s: %d call(s) cleared, %d message(s) deleted, %d could not be; database: %s",
            who,
            len(to_clear),
            deleted,
            len(refused) + len(too_old),
            reclaimed,
        )
    else:
        log.info(
            "forget: %s: %d call(s) cleared, %d stored message(s) blanked, Telegram messages kept; database: %s",
            who,
            len(to_clear),
            blanked,
            reclaimed,
        )
    if any(not isinstance(exc, PermanentError) for _, exc in refused):
        return ForgetOutcome.INCOMPLETE  # an outage, a bad token: another run may delete them
    return ForgetOutcome.BUSY if busy else ForgetOutcome.DONE


def _report_old(out: Callable[[str], None], too_old: list[Message], tz: tzinfo | None) -> None:
    for message in too_old:
        out(
            f"  could not delete (older than 48 h): message {message.message_id} in chat {message.chat_id}, "
            f"sent {when_text(message.sent_at, tz)}"
        )


def _delete(
    store: Store, eraser: MessageEraser, messages: list[Message]
) -> tuple[int, list[tuple[Message, SalesbotError]]]:
    """Delete `messages`, recording each success in its row; (deleted, refused with why)."""
    deleted = 0
    refused: list[tuple[Message, SalesbotError]] = []
    for message in messages:
        try:
            eraser.delete(message.chat_id, message.message_id)
        except SalesbotError as exc:
            refused.append((message, exc))
            if isinstance(exc, PermanentError):  # too old, or gone: asking again changes nothing
                store.committed(partial(store.record_deletions, message.row, refused=[message.message_id]))
            continue
        store.committed(partial(store.record_deletions, message.row, deleted=[message.message_id]))
        deleted += 1
    return deleted, refused


def run(args: argparse.Namespace, config: Config | None) -> int:
    """`forget --phone NUMBER [--yes]`: only Telegram is contacted, and only with
    `telegram.delete_on_forget`. Exit 1 unless done (or nothing was left), 2 for a bad number."""
    assert config is not None  # loaded by `cli.main`
    eraser: MessageEraser | None = None
    if config.telegram.delete_on_forget:
        if not config.telegram.bot_token.get_secret_value():
            raise ConfigError(["telegram.bot_token: required to delete messages (telegram.delete_on_forget = true)"])
        from salesbot_poller.app import build_notifier  # the service clients: only when needed

        eraser = build_notifier(config)
    out = redacting_out(config, flush=True)

    def confirm(question: str) -> bool:
        return confirmed(question, yes=args.yes, command="forget", action="remove it", out=out)

    store = Store.open(config.storage.database, int(utc_now().timestamp()))
    try:
        outcome = forget(
            store,
            args.phone,
            int(utc_now().timestamp()),
            out,
            confirm,
            audio_dir=config.storage.audio_dir,
            default_chat=config.telegram.chat_id,
            eraser=eraser,
            tz=zone(config),
        )
    except ValueError as exc:
        err(f"forget: {exc}")
        return EXIT_CONFIG
    finally:
        store.close()
    return EXIT_OK if outcome in (ForgetOutcome.DONE, ForgetOutcome.NOTHING) else EXIT_CHECK_FAILED
