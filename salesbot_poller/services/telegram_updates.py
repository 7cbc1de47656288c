"""Reading the bot's updates from Telegram (long polling `getUpdates`) for its commands.

Contract:
- `TelegramUpdates.username()`: the bot's @username (`getMe`, asked once, then kept): a
  command addressed `/stats@OtherBot` is not ours.
- `TelegramUpdates.fetch(offset, wait)`: the updates from `offset` (None: the oldest Telegram
  still holds), waiting up to `wait` seconds (at least 1) for one to come; only `message` updates are asked
  for. Each becomes an `Incoming` (an update without a text message keeps its id, with
  `text` ""), so the caller can move its offset past it. Calling with an offset confirms every
  update below it: Telegram never sends those again.
- Errors are raised like `TelegramNotifier`'s; a 409 (a webhook is set, or another process
  polls the same bot) is a `FatalError` that says which and what to do. The HTTP timeouts are
  `wait` plus `READ_MARGIN` seconds (telebot's own rule), and `CONNECT_TIMEOUT` to connect.
"""

from __future__ import annotations

import telebot
from telebot import apihelper

from salesbot_poller.domain import Incoming
from salesbot_poller.errors import FatalError, TransientError
from salesbot_poller.services.telegram import _map_api_error

CONNECT_TIMEOUT = 10
READ_MARGIN = 5  # telebot reads for the long-poll wait plus this


def _incoming(update: telebot.types.Update) -> Incoming:
    message = update.message
    if message is None:
        return Incoming(int(update.update_id))
    user = message.from_user
    return Incoming(
        int(update.update_id),
        str(message.chat.id),
        int(user.id) if user is not None else None,
        int(message.message_id),
        message.text or "",
    )


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
            updates = self._bot.get_updates(
                offset=offset,
                timeout=CONNECT_TIMEOUT,
                allowed_updates=["message"],
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
        return [_incoming(update) for update in updates]


def _status(exc: apihelper.ApiException) -> int:
    return int(getattr(exc.result, "status_code", 0) or 0)


def _conflict(description: str) -> str:
    if "webhook" in description.lower():
        return "Telegram getUpdates: the bot has a webhook set; remove it (deleteWebhook) to use its commands here"
    return (
        "Telegram getUpdates: another process reads this bot's updates; only one service may use "
        "telegram.command_chats with this bot token"
    )
