"""A fake Telegram Bot API (what pyTelegramBotAPI sends with apihelper.API_URL pointed here)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from .base import JSON, FakeServer, RecordedRequest, Reply, form_params, json_reply, text_reply
from .tg_html import TelegramHTMLError, utf16_len, validate_telegram_html

BOT_USER: JSON = {"id": 123, "is_bot": True, "first_name": "SalesBot", "username": "salesbot_test_bot"}
MAX_REQUEST_LINE = 8192
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
_URI_TOO_LONG = (
    "<html><head><title>414 Request-URI Too Large</title></head><body><center>"
    "<h1>414 Request-URI Too Large</h1></center><hr><center>nginx</center></body></html>"
)


def tg_error(code: int, description: str, **parameters: Any) -> Reply:
    """`{"ok": false, ...}` with an optional `parameters` object."""
    body: JSON = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return json_reply(body, code)


class _ApiError(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def _json_param(params: dict[str, str], name: str) -> Any:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise _ApiError(tg_error(400, f"Bad Request: can't parse {name} JSON object")) from None


def _keyboard(params: dict[str, str]) -> Any:
    """The rows of an inline keyboard in `reply_markup`, checked as Telegram checks them."""
    markup = _json_param(params, "reply_markup")
    if markup is None:
        return None
    rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
    if not isinstance(rows, list):
        raise _ApiError(tg_error(400, "Bad Request: can't parse inline keyboard button"))
    for row in rows:
        for button in row:
            data = button.get("callback_data", "")
            if not button.get("text") or not 1 <= len(data.encode()) <= 64:
                raise _ApiError(tg_error(400, "Bad Request: BUTTON_DATA_INVALID"))
    return rows


class FakeTelegram(FakeServer):
    """Fake Bot API at `/bot<token>/<method>`. Contract:

    - Parameters merge the query string and the body (urlencoded, multipart or JSON).
    - Wrong token -> 401; unknown method -> 404; request line over 8192 bytes -> 414 HTML
      (nginx). Method names are case-insensitive, as in Telegram.
    - `getMe`; `sendMessage` (checks chat, HTML entities, 4096 UTF-16 units, empty text) stores
      `messages`; `sendDocument` (multipart field `document`, caption <= 1024) stores
      `documents`. Both answer real Message objects with incrementing `message_id`.
    - `sendVoice` / `sendAudio` (a multipart upload, or a file id it gave before) store `clips`
      (with `arrived`, the monotonic time the request arrived) and answer a Message whose
      `voice` / `audio` carries a `file_id`; a chat in `voice_forbidden_chats` answers
      sendVoice 400 "Bad Request: VOICE_MESSAGES_FORBIDDEN", as Telegram does for a person
      whose privacy settings refuse voice messages.
    - A chat in `migrate_chats` answers 400 with `parameters.migrate_to_chat_id`; a chat not in
      `known_chats` answers 400 "chat not found"; a chat in `down_chats` answers 502 (an outage
      that hits one destination only).
    - `deleteMessage` answers true for a message it sent in that chat (recorded in `deleted`);
      400 "message to delete not found" for an unknown or already deleted one, 400 "message
      can't be deleted" for one older than 48 hours or listed in `undeletable`.
    - Every rendered message and caption is checked by `tg_html.validate_telegram_html`;
      `reply_parameters` / `message_thread_id` are recorded for messages and documents.
    - Buttons: a message's `reply_markup` (an inline keyboard) is checked as Telegram does
      (each button's `callback_data` 1-64 bytes, else 400 BUTTON_DATA_INVALID) and recorded;
      `markup[(chat, id)]` and `texts[(chat, id)]` are what each message shows now.
      `press(chat, message_id, user_id, data)` queues a `callback_query` update as a tap would
      (with the message's date, `date` to make it older). `answerCallbackQuery` is recorded in
      `answers` (400 "query is too old" for an unknown id or one answered already);
      `editMessageReplyMarkup` / `editMessageText` change a message the bot sent in that chat
      (recorded in `edits`), 400 "message is not modified" when nothing changes, "message to
      edit not found" for an unknown one, "message can't be edited" for one in `uneditable`.
    """

    def __init__(self, token: str = "123:TEST") -> None:
        super().__init__()
        self.token = token
        self.known_chats: set[str] = {"-1001234567890"}
        self.migrate_chats: dict[str, int] = {}
        self.down_chats: set[str] = set()
        self.messages: list[JSON] = []
        self.documents: list[JSON] = []
        self.on_accept: Callable[[JSON], None] | None = None
        self._message_id = 0
        self.deleted: list[tuple[str, int]] = []  # (chat, message id) deleted by deleteMessage
        self.undeletable: set[int] = set()  # message ids Telegram holds too old to delete
        self._sent_at: dict[tuple[str, int], float] = {}
        self.photos: list[JSON] = []
        self.clips: list[JSON] = []  # sendVoice / sendAudio, uploaded or by file id (`_send_media`)
        self.voice_forbidden_chats: set[str] = set()  # a person whose privacy settings refuse voice messages
        self.updates: list[JSON] = []  # queued, not yet confirmed
        self.update_offsets: list[int | None] = []
        self._update_id = 0
        self._new_update = threading.Condition()
        self.markup: dict[tuple[str, int], Any] = {}  # (chat, message id) -> inline keyboard rows shown
        self.texts: dict[tuple[str, int], str] = {}  # (chat, message id) -> HTML text shown
        self.answers: list[JSON] = []  # answerCallbackQuery parameters, in order
        self.edits: list[JSON] = []  # editMessageText / editMessageReplyMarkup, in order
        self.uneditable: set[int] = set()  # message ids Telegram refuses to edit
        self._queries: set[str] = set()  # callback query ids not answered yet

    @property
    def api_url(self) -> str:
        """The value for `telebot.apihelper.API_URL`."""
        return self.base_url + "/bot{0}/{1}"

    def route(self, req: RecordedRequest) -> Reply:
        if len(f"{req.method} {req.target} HTTP/1.1".encode()) > MAX_REQUEST_LINE:
            return text_reply(_URI_TOO_LONG, 414, "text/html")
        m = re.fullmatch(r"/bot([^/]*)/([A-Za-z]+)", req.path)
        if m is None:
            return tg_error(404, "Not Found")
        if m[1] != self.token:
            return tg_error(401, "Unauthorized")
        handler = {
            "getme": self._get_me,
            "getchat": self._get_chat,
            "sendmessage": self._send_message,
            "senddocument": self._send_document,
            "deletemessage": self._delete_message,
            "sendphoto": self._send_photo,
            "sendvoice": self._send_voice,
            "sendaudio": self._send_audio,
            "getupdates": self._get_updates,
            "answercallbackquery": self._answer_callback,
            "editmessagereplymarkup": self._edit_markup,
            "editmessagetext": self._edit_text,
        }.get(m[2].lower())
        if handler is None:
            return tg_error(404, "Not Found")
        try:
            params, files = form_params(req)
            return handler(params, files)
        except _ApiError as exc:
            return exc.reply
        except ValueError:
            return tg_error(400, "Bad Request: can't parse request body")

    @staticmethod
    def _ok(result: Any) -> Reply:
        return json_reply({"ok": True, "result": result})

    def _get_me(self, params: dict[str, str], files: dict[str, Any]) -> Reply:
        return self._ok(
            {
                **BOT_USER,
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        )

    def _get_chat(self, params: dict[str, str], files: dict[str, Any]) -> Reply:
        chat_id = self._chat(params)
        return self._ok({"id": int(chat_id), "type": "supergroup", "title": "Sales"})

    # shared checks -------------------------------------------------------------------------
    def _chat(self, params: dict[str, str]) -> str:
        chat_id = params.get("chat_id", "").strip()
        if not chat_id:
            raise _ApiError(tg_error(400, "Bad Request: chat_id is empty"))
        if chat_id in self.down_chats:
            raise _ApiError(tg_error(502, "Bad Gateway"))
        if chat_id in self.migrate_chats:
            raise _ApiError(
                tg_error(
                    400,
                    "Bad Request: group chat was upgraded to a supergroup chat",
                    migrate_to_chat_id=self.migrate_chats[chat_id],
                )
            )
        if chat_id not in self.known_chats:
            raise _ApiError(tg_error(400, "Bad Request: chat not found"))
        return chat_id

    @staticmethod
    def _visible(text: str, parse_mode: str | None) -> str:
        if (parse_mode or "").lower() != "html":
            return text
        try:
            return validate_telegram_html(text)
        except TelegramHTMLError as exc:
            raise _ApiError(tg_error(400, f"Bad Request: can't parse entities: {exc.reason}")) from None

    def _message(self, chat_id: str, params: dict[str, str], **content: Any) -> JSON:
        numeric = re.fullmatch(r"-?\d+", chat_id) is not None
        chat: JSON = (
            {"id": int(chat_id), "type": "supergroup", "title": "Sales"}
            if numeric and chat_id.startswith("-")
            else {"id": int(chat_id), "type": "private", "first_name": "Test"}
            if numeric
            else {"id": -1009999999999, "type": "channel", "title": "Sales", "username": chat_id.lstrip("@")}
        )
        self._message_id += 1
        self._sent_at[(chat_id, self._message_id)] = time.time()
        msg: JSON = {
            "message_id": self._message_id,
            "date": int(time.time()),
            "chat": chat,
            "from": dict(BOT_USER),
            **content,
        }
        if params.get("message_thread_id"):
            msg["message_thread_id"] = int(params["message_thread_id"])
            msg["is_topic_message"] = True
        return msg

    # methods -------------------------------------------------------------------------------
    def _send_message(self, params: dict[str, str], files: dict[str, Any]) -> Reply:
        chat_id = self._chat(params)
        text = params.get("text", "")
        parse_mode = params.get("parse_mode")
        visible = self._visible(text, parse_mode)
        if not visible.strip():
            return tg_error(400, "Bad Request: message text is empty")
        if utf16_len(visible) > TEXT_LIMIT:
            return tg_error(400, "Bad Request: message is too long")
        reply_parameters = _json_param(params, "reply_parameters")
        link_preview_options = _json_param(params, "link_preview_options")
        keyboard = _keyboard(params)
        with self.lock:
            msg = self._message(chat_id, params, text=visible)
            self.texts[(chat_id, msg["message_id"])] = text
            if keyboard is not None:
                self.markup[(chat_id, msg["message_id"])] = keyboard
                msg["reply_markup"] = {"inline_keyboard": keyboard}
            self.messages.append(
                {
                    "message_id": msg["message_id"],
                    "chat_id": chat_id,
                    "text": text,
                    "parse_mode": parse_mode,
                    "visible_text": visible,
                    "message_thread_id": params.get("message_thread_id"),
                    "reply_to_message_id": params.get("reply_to_message_id"),
                    "reply_parameters": reply_parameters,
                    "link_preview_options": link_preview_options,
                    "reply_markup": keyboard,
                }
            )
            record = self.messages[-1]
        self._accepted(record)
        return self._ok(msg)

    def _send_document(self, params: dict[str, str], files: dict[str, Any]) -> Reply:
        chat_id = self._chat(params)
        upload = files.get("document")
        if upload is None and not params.get("document"):
            return tg_error(400, "Bad Request: there is no document in the request")
        caption = params.get("caption")
        parse_mode = params.get("parse_mode")
        visible_caption = self._visible(caption, parse_mode) if caption else None
        if visible_caption and utf16_len(visible_caption) > CAPTION_LIMIT:
            return tg_error(400, "Bad Request: message caption is too long")
        data: bytes = upload.data if upload is not None else b""
        filename = (upload.filename if upload is not None else None) or "document"
        unique = hashlib.sha1(data or params.get("document", "").encode()).hexdigest()[:16]
        document = {
            "file_name": filename,
            "mime_type": getattr(upload, "content_type", None) or "application/octet-stream",
            "file_id": f"BQAC{unique}",
            "file_unique_id": f"AgAD{unique[:8]}",
            "file_size": len(data),
        }
        content: JSON = {"document": document}
        if visible_caption:
            content["caption"] = visible_caption
        with self.lock:
            msg = self._message(chat_id, params, **content)
            self.documents.append(
                {
                    "message_id": msg["message_id"],
                    "chat_id": chat_id,
                    "filename": filename,
                    "bytes": data,
                    "caption": caption,
                    "parse_mode": parse_mode,
                    "message_thread_id": params.get("message_thread_id"),
                    "reply_parameters": _json_param(params, "reply_parameters"),
                }
            )
            record = self.documents[-1]
        self._accepted(record)
        return self._ok(msg)

    def _delete_message(self, params: dict[str, str], files: dict[str, Any]) -> Reply:
        chat_id = self._chat(params)
        try:
            message_id = int(params.get("message_id", ""))
        except ValueError:
            return tg_error(400, "Bad Request: message identifier is not specified")
        with self.lock:
            sent_at = self._sent_at.get((chat_id, message_id))
            if sent_at is None:
                return tg_error(400, "Bad Request: message to delete not found")
            if message_id in self.undeletable or time.time() - sent_at > 48 * 3600:
                return tg_error(400, "Bad Request: message can't be deleted")
            del self._sent_at[(chat_id, message_id)]
            self.deleted.append((chat_id, message_id))
        return self._ok(True)

    def _send_photo(self, params: dict[str, str], files: dict[str, Any]) -> Reply:
        chat_id = self._chat(params)
        upload = files.get("photo")
        if upload is None:
            return tg_error(400, "Bad Request: there is no photo in the request")
        caption = params.get("caption")
        visible_caption = self._visible(caption, params.get("parse_mode")) if caption else None
        if visible_caption and utf16_len(visible_caption) > CAPTION_LIMIT:
            return tg_error(400, "Bad Request: message caption is too long")
        unique = hashlib.sha1(upload.data).hexdigest()[:16]
        photo = [
            {
                "file_id": f"AgAC{unique}",
                "file_unique_id": f"AQAD{unique[:8]}",
                "width": 1200,
                "height": 675,
                "file_size": len(upload.data),
            }
        ]
        content: JSON = {"photo": photo}
        if visible_caption:
            content["caption"] = visible_caption
        with self.lock:
            msg = self._message(chat_id, params, **content)
            self.photos.append(
                {
                    "message_id": msg["message_id"],
                    "chat_id": chat_id,
                    "bytes": upload.data,
                    "caption": caption,
                    "parse_mode": params.get("parse_mode"),
                    "message_thread_id": params.get("message_thread_id"),
                    "reply_parameters": _json_param(params, "reply_parameters"),
                }
            )
            record = self.photos[-1]
        self._accepted(record)
        return self._ok(msg)

    def _send_voice(self, params: dict[str, str], files: dict[str, Any]) -> Reply:
        return self._send_media("voice", params, files)

    def _send_audio(self, params: dict[str, str], files: dict[str, Any]) -> Reply:
        return self._send_media("audio", params, files)

    def _send_media(self, kind: str, params: dict[str, str], files: dict[str, Any]) -> Reply:
        """sendVoice / sendAudio: a multipart upload (field `voice` / `audio`) or a file id
        Telegram holds; a chat in `voice_forbidden_chats` refuses voice messages as Telegram does."""
        arrived = time.monotonic()
        chat_id = self._chat(params)
        if kind == "voice" and chat_id in self.voice_forbidden_chats:
            return tg_error(400, "Bad Request: VOICE_MESSAGES_FORBIDDEN")
        upload = files.get(kind)
        by_id = params.get(kind)
        if upload is None and not by_id:
            return tg_error(400, f"Bad Request: there is no {kind} in the request")
        if by_id and not any(c["file_id"] == by_id for c in self.clips):
            return tg_error(400, "Bad Request: wrong file identifier/HTTP URL specified")
        caption = params.get("caption")
        visible_caption = self._visible(caption, params.get("parse_mode")) if caption else None
        if visible_caption and utf16_len(visible_caption) > CAPTION_LIMIT:
            return tg_error(400, "Bad Request: message caption is too long")
        data: bytes = upload.data if upload is not None else b""
        file_id = by_id or f"{'AwAC' if kind == 'voice' else 'CQAC'}{hashlib.sha1(data).hexdigest()[:16]}"
        media = {"file_id": file_id, "file_unique_id": f"AgAD{file_id[4:12]}", "duration": 0, "file_size": len(data)}
        content: JSON = {kind: media}
        if visible_caption:
            content["caption"] = visible_caption
        with self.lock:
            msg = self._message(chat_id, params, **content)
            self.clips.append(
                {
                    "method": "sendVoice" if kind == "voice" else "sendAudio",
                    "message_id": msg["message_id"],
                    "chat_id": chat_id,
                    "bytes": data,
                    "uploaded": upload is not None,
                    "file_id": file_id,
                    "caption": caption,
                    "parse_mode": params.get("parse_mode"),
                    "reply_parameters": _json_param(params, "reply_parameters"),
                    "arrived": arrived,
                }
            )
            record = self.clips[-1]
        self._accepted(record)
        return self._ok(msg)

    MAX_LONG_POLL = 2.0

    def push_message(self, chat_id: str, user_id: int, text: str, *, chat_type: str = "supergroup") -> int:
        """Queue a message update from `user_id` in `chat_id`; returns its update id."""
        with self._new_update, self.lock:
            self._update_id += 1
            self._message_id += 1
            chat: JSON = (
                {"id": int(chat_id), "type": chat_type, "title": "Sales"}
                if chat_type != "private"
                else {"id": int(chat_id), "type": "private", "first_name": "Boss"}
            )
            entities = (
                [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}] if text.startswith("/") else []
            )
            self.updates.append(
                {
                    "update_id": self._update_id,
                    "message": {
                        "message_id": self._message_id,
                        "date": int(time.time()),
                        "chat": chat,
                        "from": {"id": user_id, "is_bot": False, "first_name": "Boss"},
                        "text": text,
                        "entities": entities,
                    },
                }
            )
            self._new_update.notify_all()
            return self._update_id

    def push_update(self, body: JSON) -> int:
        """Queue a forged update: `body` (any keys, any shape) under the next update id; returns it."""
        with self._new_update, self.lock:
            self._update_id += 1
            self.updates.append({"update_id": self._update_id, **body})
            self._new_update.notify_all()
            return self._update_id

    def _get_updates(self, params: dict[str, str], files: dict[str, Any]) -> Reply:
        offset = int(params["offset"]) if params.get("offset") else None
        limit = int(params.get("limit") or 100)
        wait = min(float(params.get("timeout") or 0), self.MAX_LONG_POLL)
        deadline = time.monotonic() + wait
        with self._new_update:
            self.update_offsets.append(offset)
            if offset is not None:
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
            while not self.updates and (left := deadline - time.monotonic()) > 0:
                self._new_update.wait(left)
            return self._ok(list(self.updates[:limit]))

    def press(
        self,
        chat_id: str,
        message_id: int,
        user_id: int,
        data: str,
        *,
        first_name: str = "Анна",
        date: int | None = None,
    ) -> str:
        """Queue a tap on a button with `data` under message `message_id`; returns the query id."""
        with self._new_update, self.lock:
            self._update_id += 1
            query_id = f"q{self._update_id}{message_id}"
            self._queries.add(query_id)
            sent_at = self._sent_at.get((chat_id, message_id), time.time())
            message: JSON = {
                "message_id": message_id,
                "date": int(sent_at) if date is None else date,
                "chat": {"id": int(chat_id), "type": "supergroup", "title": "Sales"},
                "from": dict(BOT_USER),
                "text": "card",
            }
            user = {"id": user_id, "is_bot": False, "first_name": first_name}
            query = {"id": query_id, "from": user, "message": message, "chat_instance": "1", "data": data}
            self.updates.append({"update_id": self._update_id, "callback_query": query})
            self._new_update.notify_all()
            return query_id

    def _answer_callback(self, params: dict[str, str], files: dict[str, Any]) -> Reply:
        with self.lock:
            query_id = params.get("callback_query_id", "")
            if query_id not in self._queries:
                return tg_error(
                    400, "Bad Request: query is too old and response timeout expired or query ID is invalid"
                )
            self._queries.discard(query_id)
            self.answers.append(dict(params))
        return self._ok(True)

    def _editable(self, params: dict[str, str]) -> tuple[str, int]:
        chat_id = self._chat(params)
        message_id = int(params.get("message_id") or 0)
        if (chat_id, message_id) not in self._sent_at:
            raise _ApiError(tg_error(400, "Bad Request: message to edit not found"))
        if message_id in self.uneditable:
            raise _ApiError(tg_error(400, "Bad Request: message can't be edited"))
        return chat_id, message_id

    def _edit_markup(self, params: dict[str, str], files: dict[str, Any]) -> Reply:
        chat_id, message_id = self._editable(params)
        keyboard = _keyboard(params)
        with self.lock:
            if self.markup.get((chat_id, message_id)) == keyboard:
                return tg_error(400, "Bad Request: message is not modified")
            self.markup[(chat_id, message_id)] = keyboard
            self.edits.append({"method": "editMessageReplyMarkup", "chat_id": chat_id, "message_id": message_id})
        return self._ok(True)

    def _edit_text(self, params: dict[str, str], files: dict[str, Any]) -> Reply:
        chat_id, message_id = self._editable(params)
        text = params.get("text", "")
        self._visible(text, params.get("parse_mode"))
        keyboard = _keyboard(params)
        with self.lock:
            if self.texts.get((chat_id, message_id)) == text and self.markup.get((chat_id, message_id)) == keyboard:
                return tg_error(400, "Bad Request: message is not modified")
            self.texts[(chat_id, message_id)] = text
            self.markup[(chat_id, message_id)] = keyboard
            self.edits.append({"method": "editMessageText", "chat_id": chat_id, "message_id": message_id, "text": text})
        return self._ok(True)

    def _accepted(self, record: JSON) -> None:
        hook = self.on_accept
        if hook is not None:
            hook(record)
