"""Reading the bot's updates from Telegram (long polling `getUpdates`) for its commands.

Contract:
- `TelegramUpdates.username()`: the bot's @username (`getMe`, asked once, then kept): a
  command addressed `/stats@OtherBot` is not ours.
- `TelegramUpdates.fetch(offset, wait)`: the updates from `offset` (None: the oldest Telegram
  still holds), waiting up to `wait` seconds (at least 1) for one to come; only `message` and
  `callback_query` (a button pressed: `Incoming.press`, a `domain.Press`) updates are asked
  for. Each becomes an `Incoming` (an update without a text message keeps its id, with
  `text` ""), so the caller can move its offset past it. Calling with an offset confirms every
  update below it: Telegram never sends those again.
- Updates are read one by one from the raw answer: one the client library cannot read (no
  chat, a field of the wrong type, a kind half there) is logged once with its update id and
  comes back as an `Incoming` with `text` "", so the others of its batch are answered and the
  offset moves past it. A message sent on behalf of a chat (an anonymous admin, a channel)
  keeps that chat's id (`Incoming.sender_chat_id`). One without a readable `update_id` cannot be confirmed: it is logged
  and left out.
- Errors are raised like `TelegramNotifier`'s; a 409 (a webhook is set, or another process
  polls the same bot) is a `FatalError` that says which and what to do. The HTTP timeouts are
  `wait` plus `READ_MARGIN` seconds (telebot's own rule), and `CONNECT_TIMEOUT` to connect.
"""

from __future__ import annotations

import logging
from typing import Any

import telebot
from telebot import apihelper, types

from salesbot_poller.domain import Incoming, Press
from salesbot_poller.errors import FatalError, TransientError
from salesbot_poller.logs import excerpt
from salesbot_poller.services.telegram import _map_api_error

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10
READ_MARGIN = 5  # telebot reads for the long-poll wait plus this


def _name(user: types.User) -> str:
    full = " ".join(part for part in (user.first_name, user.last_name) if isinstance(part, str) and part.strip())
    return full.strip() or (f"@{user.username}" if isinstance(user.username, str) else str(user.id))


def _press(update_id: int, query: types.CallbackQuery) -> Incoming:
    """A `callback_query` as `Incoming.press`; ValueError when it is not as documented."""
    user, message = query.from_user, query.message
    if not isinstance(query.id, str) or not query.id:
        raise ValueError("a callback query without an id")
    if user is None or not isinstance(user.id, int):
        raise ValueError("a callback query without a numeric sender id")
    chat = getattr(message, "chat", None)
    if message is None or chat is None or not isinstance(chat.id, int):
        raise ValueError("a callback query without its message's chat")
    data = query.data if isinstance(query.data, str) else ""
    date = getattr(message, "date", 0)
    press = Press(query.id, user.id, _name(user), str(chat.id), int(message.message_id), int(date or 0), data)
    return Incoming(update_id, str(chat.id), user.id, int(message.message_id), press=press)


def _incoming(update: types.Update) -> Incoming:
    """The update as `Incoming`; ValueError when a message is there but not as documented."""
    update_id = int(update.update_id)
    if update.callback_query is not None:
        return _press(update_id, update.callback_query)
    message = update.message
    if message is None:
        return Incoming(update_id)
    chat, user, text = getattr(message, "chat", None), message.from_user, message.text
    if chat is None or not isinstance(chat.id, int):
        raise ValueError("a message without a chat id")
    if user is not None and not isinstance(user.id, int):
        raise ValueError("a sender without a numeric id")
    if text is not None and not isinstance(text, str):
        raise ValueError(f"a text of type {type(text).__name__}")
    on_behalf = getattr(message, "sender_chat", None)
    if on_behalf is not None and not isinstance(on_behalf.id, int):
        raise ValueError("a sender chat without a numeric id")
    return Incoming(
        update_id,
        str(chat.id),
        user.id if user is not None else None,
        int(message.message_id),
        text or "",
        str(on_behalf.id) if on_behalf is not None else None,
    )


def _read(raw: Any) -> Incoming | None:
    """One raw update of a `getUpdates` answer: see the module contract."""
    update_id = raw.get("update_id") if isinstance(raw, dict) else None
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        log.warning("bot: an update without a readable update_id skipped: %s", excerpt(repr(raw), 120))
        return None
    try:
        return _incoming(types.Update.de_json(raw))  # type: ignore[no-untyped-call]
    except Exception as exc:  # any shape telebot trips over: this update only, never the batch
        why = f"{type(exc).__name__}: {excerpt(str(exc), 120)}"
        log.warning("bot: update %d skipped: unreadable (%s)", update_id, why)
        return Incoming(update_id)


class TelegramUpdates:
    """Implements `domain.UpdateSource` over a `telebot.TeleBot` (its process-wide transport)."""

    def __init__(self, bot: telebot.TeleBot) -> None:
        self._bot = bot
        self._username: str | None = None

    def username(self) -> str:
        if self._username is None:
            try:
                self._username = str(self._bot.get_me().username or "")
            except apihelper.ApiTelegramException as exc:
                raise _map_api_error(exc, "getMe") from None
            except apihelper.ApiException as exc:
                raise TransientError(f"Telegram getMe: unusable answer (HTTP {_status(exc)})") from None
        return self._username

    def fetch(self, offset: int | None, wait: int) -> list[Incoming]:
        try:
            # The raw answer, not `TeleBot.get_updates`: that parses the whole batch at once,
            # and one update it cannot read would fail every other one with it, for good.
            updates = apihelper.get_updates(  # type: ignore[no-untyped-call]
                self._bot.token,
                offset=offset,
                timeout=CONNECT_TIMEOUT,
                allowed_updates=["message", "callback_query"],
                # telebot reads 0 as "its default" (20 s): the shortest wait it passes on is 1 s.
                long_polling_timeout=max(1, wait),
            )
        except apihelper.ApiTelegramException as exc:
            if exc.error_code == 409:
                raise FatalError(_conflict(str(exc.description))) from None
            raise _map_api_error(exc, "getUpdates") from None
        except apihelper.ApiException as exc:
            raise TransientError(f"Telegram getUpdates: unusable answer (HTTP {_status(exc)})") from None
        except (KeyError, TypeError, ValueError):
            raise TransientError("Telegram getUpdates: malformed answer") from None
        if not isinstance(updates, list):
            raise TransientError("Telegram getUpdates: malformed answer (no list of updates)")
        return [incoming for incoming in map(_read, updates) if incoming is not None]


def _status(exc: apihelper.ApiException) -> int:
    return int(getattr(exc.result, "status_code", 0) or 0)


def _conflict(description: str) -> str:
    if "webhook" in description.lower():
        return "Telegram getUpdates: the bot has a webhook set; remove it (deleteWebhook) to use its commands here"
    return (
        "Telegram getUpdates: another process reads this bot's updates; only one service may use "
        "telegram.command_chats with this bot token"
    )
