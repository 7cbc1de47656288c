"""Telegram delivery through pyTelegramBotAPI.

Contract:
- `TelegramNotifier.send(html, to, reply_to)` sends one HTML message (no link preview) to a
  chat/topic (default: `telegram.chat_id`), optionally as a reply (`reply_parameters`, sent
  even if the original is gone); `send_document` sends a file with an HTML caption,
  `send_photo` a PNG picture with one. All return the message id, or raise:
  `TransientError` (429 with its retry_after, 5xx, network), `FatalError` (bad token, chat
  not found, bot blocked or kicked: a human must act), `PermanentError` (this message is
  refused, e.g. bad markup). `send_voice`/`send_audio` (a quote's clip, OGG/Opus bytes) and
  `send_voice_id`/`send_audio_id` (the same clip again, by Telegram's file id) return the
  file id instead, and raise the same way; a chat refusing voice messages raises
  `VoiceForbidden`. `delete(chat, id)` deletes one
  of the bot's messages (`forget`), raising the same way.
- Buttons: `send` takes an inline `keyboard` (rows of (text, callback_data)); a press is
  answered with `answer_callback(id, text, show_alert)` (`answerCallbackQuery`: the text is
  shown to the presser only); `edit_reply_markup(chat, id, keyboard)` and
  `edit_message_text(chat, id, html, keyboard)` change one of the bot's messages in place.
  They raise like `send`; Telegram's "message is not modified" (the message already shows
  that) is not an error. Every request has telebot's timeouts (`apihelper.CONNECT_TIMEOUT`,
  `READ_TIMEOUT`, set by the composition root).
- A group that became a supergroup (`migrate_to_chat_id`) is followed at once, with a
  warning telling the admin to update `telegram.chat_id`.
- `request_sender(session)` is the transport installed as telebot's process-wide
  `CUSTOM_REQUEST_SENDER` by the composition root: it sends parameters in the POST body
  (a long Cyrillic message in the query string can exceed URL limits) and turns network
  errors into `TransientError` texts without the URL, which holds the bot token.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import requests
import telebot
from telebot import apihelper, types

from salesbot_poller.domain import Destination, Keyboard
from salesbot_poller.errors import FatalError, PermanentError, TransientError, VoiceForbidden
from salesbot_poller.logs import excerpt

log = logging.getLogger(__name__)
ANSWER_CHARS = 200  # answerCallbackQuery shows at most this much

T = TypeVar("T")
MEDIA_TIMEOUT = 30  # seconds for an upload's answer (a clip is ~100 KB)
# Telegram's answer to sendVoice where the recipient's privacy settings refuse voice messages.
VOICE_FORBIDDEN = "VOICE_MESSAGES_FORBIDDEN"

FATAL_DESCRIPTIONS = {
    "chat not found": "check telegram.chat_id and that the bot was added to the chat",
    "bot was blocked by the user": "unblock the bot in that chat",
    "bot was kicked": "add the bot back to the chat",
    "bot is not a member": "add the bot to the chat",
    "not enough rights": "allow the bot to post messages in the chat",
    "have no rights to send": "allow the bot to post messages in the chat",
}


def _message_id(message: types.Message) -> int:
    return int(message.message_id)


def _voice_file_id(message: types.Message) -> str:
    if message.voice is None:  # an answer without what was sent: unusable
        raise ValueError("no voice in the message")
    return str(message.voice.file_id)


def _audio_file_id(message: types.Message) -> str:
    if message.audio is None:
        raise ValueError("no audio in the message")
    return str(message.audio.file_id)


def request_sender(session: requests.Session) -> Callable[..., requests.Response]:
    """A telebot `CUSTOM_REQUEST_SENDER` posting form bodies over `session`."""

    def send(
        method: str,
        url: str,
        params: dict[str, Any] | None = None,
        files: Any = None,
        timeout: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        method_name = url.rsplit("/", 1)[-1]
        is_post = method.lower() == "post"
        try:
            return session.request(
                method,
                url,
                params=None if is_post else params,
                data=params if is_post else None,
                files=files,
                timeout=timeout or (10, 30),
                proxies=proxies,
            )
        except requests.RequestException as exc:
            raise TransientError(f"Telegram {method_name}: {type(exc).__name__}") from None

    return send


def _map_api_error(exc: apihelper.ApiTelegramException, method: str) -> Exception:
    code = exc.error_code
    description = str(exc.description)
    if code == 429:
        retry_after = (exc.result_json.get("parameters") or {}).get("retry_after")
        return TransientError(f"Telegram {method}: rate limited (429)", retry_after=retry_after)
    if code >= 500:
        return TransientError(f"Telegram {method}: HTTP {code}")
    if code in (401, 404):  # Telegram's answers to a wrong or malformed bot token
        return FatalError(f"Telegram rejected the bot token (HTTP {code}): set telegram.bot_token from @BotFather")
    for needle, fix in FATAL_DESCRIPTIONS.items():
        if needle in description.lower():
            return FatalError(f"Telegram {method}: {description}: {fix}")
    return PermanentError(f"Telegram {method}: HTTP {code}: {excerpt(description)}")


def markup(keyboard: Keyboard | None) -> types.InlineKeyboardMarkup | None:
    """`keyboard` as telebot's inline keyboard; None: no buttons (an edit removes them)."""
    if keyboard is None:
        return None
    buttons = [[types.InlineKeyboardButton(text, callback_data=data) for text, data in row] for row in keyboard]
    return types.InlineKeyboardMarkup(buttons)


class TelegramNotifier:
    """Implements `domain.Notifier`. `to=None` is the default chat (`telegram.chat_id`)."""

    def __init__(self, bot: telebot.TeleBot, chat_id: str) -> None:
        self._bot = bot
        self.chat_id = chat_id
        self._migrated: dict[str, str] = {}  # other chats that became supergroups

    def send(
        self, html: str, to: Destination | None = None, reply_to: int | None = None, keyboard: Keyboard | None = None
    ) -> int:
        return self._deliver(
            "sendMessage",
            lambda chat, thread, reply: self._bot.send_message(
                chat,
                html,
                parse_mode="HTML",
                link_preview_options=types.LinkPreviewOptions(is_disabled=True),
                message_thread_id=thread,
                reply_parameters=reply,
                reply_markup=markup(keyboard),
            ),
            to,
            reply_to,
        )

    def answer_callback(self, callback_id: str, text: str = "", show_alert: bool = False) -> None:
        shown = text[: ANSWER_CHARS - 1] + "…" if len(text) > ANSWER_CHARS else text  # Telegram's limit
        self._edit(
            "answerCallbackQuery", lambda: self._bot.answer_callback_query(callback_id, shown or None, show_alert)
        )

    def edit_reply_markup(self, chat_id: str, message_id: int, keyboard: Keyboard | None) -> None:
        self._edit(
            "editMessageReplyMarkup",
            lambda: self._bot.edit_message_reply_markup(chat_id, message_id, reply_markup=markup(keyboard)),
        )

    def edit_message_text(self, chat_id: str, message_id: int, html: str, keyboard: Keyboard | None = None) -> None:
        self._edit(
            "editMessageText",
            lambda: self._bot.edit_message_text(
                html,
                chat_id,
                message_id,
                parse_mode="HTML",
                link_preview_options=types.LinkPreviewOptions(is_disabled=True),
                reply_markup=markup(keyboard),
            ),
        )

    def _edit(self, method: str, call: Callable[[], object]) -> None:
        try:
            call()
        except apihelper.ApiTelegramException as exc:
            if "message is not modified" in str(exc.description).lower():
                return  # it already shows that: a second tap, or an edit that changed nothing
            raise _map_api_error(exc, method) from None
        except apihelper.ApiException as exc:
            status = getattr(exc.result, "status_code", 0)
            raise TransientError(f"Telegram {method}: unusable answer (HTTP {status})") from None
        except (KeyError, TypeError, ValueError):
            raise TransientError(f"Telegram {method}: malformed answer") from None

    def send_document(
        self, filename: str, data: bytes, caption: str, to: Destination | None = None, reply_to: int | None = None
    ) -> int:
        return self._deliver(
            "sendDocument",
            lambda chat, thread, reply: self._bot.send_document(
                chat,
                types.InputFile(io.BytesIO(data), file_name=filename),
                caption=caption,
                parse_mode="HTML",
                visible_file_name=filename,
                message_thread_id=thread,
                reply_parameters=reply,
            ),
            to,
            reply_to,
        )

    def send_photo(self, png: bytes, caption: str, to: Destination | None = None, reply_to: int | None = None) -> int:
        return self._deliver(
            "sendPhoto",
            lambda chat, thread, reply: self._bot.send_photo(
                chat,
                types.InputFile(io.BytesIO(png), file_name="chart.png"),
                caption=caption,
                parse_mode="HTML",
                message_thread_id=thread,
                reply_parameters=reply,
            ),
            to,
            reply_to,
        )

    def send_voice(self, data: bytes, caption: str, to: Destination | None = None, reply_to: int | None = None) -> str:
        """Send OGG/Opus `data` as a voice message with an HTML caption; return its file id.
        A chat refusing voice messages raises `VoiceForbidden` (a `PermanentError`)."""
        return self._voice(types.InputFile(io.BytesIO(data), file_name="clip.ogg"), caption, to, reply_to)

    def send_voice_id(
        self, file_id: str, caption: str, to: Destination | None = None, reply_to: int | None = None
    ) -> str:
        """Send again a voice message Telegram already holds (`file_id`); return its file id."""
        return self._voice(file_id, caption, to, reply_to)

    def send_audio(self, data: bytes, caption: str, to: Destination | None = None, reply_to: int | None = None) -> str:
        """Send OGG/Opus `data` as an audio file (a player, not a voice message: what a chat
        refusing voice messages still takes) with an HTML caption; return its file id."""
        return self._audio(types.InputFile(io.BytesIO(data), file_name="clip.ogg"), caption, to, reply_to)

    def send_audio_id(
        self, file_id: str, caption: str, to: Destination | None = None, reply_to: int | None = None
    ) -> str:
        """Send again an audio file Telegram already holds; return its file id."""
        return self._audio(file_id, caption, to, reply_to)

    def _voice(self, voice: types.InputFile | str, caption: str, to: Destination | None, reply_to: int | None) -> str:
        try:
            return self._deliver(
                "sendVoice",
                lambda chat, thread, reply: self._bot.send_voice(
                    chat,
                    voice,
                    caption=caption,
                    parse_mode="HTML",
                    message_thread_id=thread,
                    reply_parameters=reply,
                    timeout=MEDIA_TIMEOUT,
                ),
                to,
                reply_to,
                _voice_file_id,
            )
        except PermanentError as exc:
            if VOICE_FORBIDDEN in str(exc):
                raise VoiceForbidden(str(exc)) from None
            raise

    def _audio(self, audio: types.InputFile | str, caption: str, to: Destination | None, reply_to: int | None) -> str:
        return self._deliver(
            "sendAudio",
            lambda chat, thread, reply: self._bot.send_audio(
                chat,
                audio,
                caption=caption,
                parse_mode="HTML",
                title="clip",
                message_thread_id=thread,
                reply_parameters=reply,
                timeout=MEDIA_TIMEOUT,
            ),
            to,
            reply_to,
            _audio_file_id,
        )

    def _deliver(
        self,
        method: str,
        call: Callable[[str, int | None, types.ReplyParameters | None], types.Message],
        to: Destination | None,
        reply_to: int | None,
        read: Callable[[types.Message], T] = _message_id,  # type: ignore[assignment]
    ) -> T:
        configured = to.chat_id if to else self.chat_id
        thread = to.thread_id if to else None
        # A reply whose original was deleted is still worth sending.
        reply = types.ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        for _ in range(2):  # the second round only after following a chat migration
            chat = self.chat_id if to is None else self._migrated.get(configured, configured)
            try:
                return read(call(chat, thread, reply))
            except apihelper.ApiTelegramException as exc:
                migrated = (exc.result_json.get("parameters") or {}).get("migrate_to_chat_id")
                if migrated:
                    key = "telegram.chat_id" if to is None else "the chat id in [telegram]"
                    log.warning(
                        'Telegram chat %s became supergroup %s: sending there; set %s = "%s"',
                        chat,
                        migrated,
                        key,
                        migrated,
                    )
                    if to is None:
                        self.chat_id = str(migrated)
                    else:
                        self._migrated[configured] = str(migrated)
                    continue
                raise _map_api_error(exc, method) from None
            except apihelper.ApiException as exc:
                status = getattr(exc.result, "status_code", 0)
                raise TransientError(f"Telegram {method}: unusable answer (HTTP {status})") from None
            except (KeyError, TypeError, ValueError):
                raise TransientError(f"Telegram {method}: malformed answer") from None
        raise TransientError(f"Telegram {method}: chat migrated twice")

    def delete(self, chat_id: str, message_id: int) -> None:
        """Delete one of the bot's messages (`deleteMessage`); raises like `send`. Telegram
        refuses (a `PermanentError`) a message older than 48 hours or one already gone."""
        try:
            self._bot.delete_message(chat_id, message_id)
        except apihelper.ApiTelegramException as exc:
            raise _map_api_error(exc, "deleteMessage") from None
        except apihelper.ApiException as exc:
            status = getattr(exc.result, "status_code", 0)
            raise TransientError(f"Telegram deleteMessage: unusable answer (HTTP {status})") from None

    def check(self, other_chats: Iterable[str] = ()) -> str:
        """ "@bot in 'chat title'" (getMe, then getChat of the default chat and of each of
        `other_chats`: routed and alert chats); raises like `send`, naming the chat."""
        method = "getMe"
        try:
            me = self._bot.get_me()
            titles = []
            for chat_id in [self.chat_id, *[c for c in dict.fromkeys(other_chats) if c != self.chat_id]]:
                method = f"getChat {chat_id}"
                chat = self._bot.get_chat(chat_id)
                titles.append(repr(chat.title or chat.username or chat.first_name or chat.id))
        except apihelper.ApiTelegramException as exc:
            raise _map_api_error(exc, method) from None
        except apihelper.ApiException as exc:
            status = getattr(exc.result, "status_code", 0)
            raise TransientError(f"Telegram {method}: unusable answer (HTTP {status})") from None
        return f"@{me.username} in {', '.join(titles)}"
