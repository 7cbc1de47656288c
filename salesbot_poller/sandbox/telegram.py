"""The Telegram Bot API sandbox: getMe, getChat, sendMessage, sendPhoto, sendDocument,
sendVoice, sendAudio, deleteMessage and getUpdates.

Contract:
- It knows the chats it was given (`chat_id`, plus `chats`: id -> title); any other chat is
  "chat not found", as Telegram answers.
- Every message the bot sends is recorded in `sent` (in order, with its `method`, `chat_id`,
  `text` or `caption`, and `filename` for a file); sendMessage's parameters also go to
  `messages`. A voice or audio clip's answer carries a file id (the one it was sent by, if
  any); a chat in `voice_forbidden` refuses sendVoice as Telegram does.
  `wait_sent(start, timeout)` returns the entries from index `start`, waiting up to
  `timeout` seconds for one to come.
- `say(text, user_id, chat_id)` queues an incoming message for getUpdates, as if a person had
  typed it there. getUpdates answers the updates from `offset` (which confirms the ones below
  it), waiting up to its `timeout` (at most `MAX_POLL_SECONDS`) for one; after `release()`
  it answers at once, so a stopping poller is not held by a long poll (`release(False)`: it
  waits again).

Parameters come in the query string, a form body or a multipart body (telebot sends all three).
"""

from __future__ import annotations

import json
import re
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs

from salesbot_poller.sandbox.http import LoopbackServer, Request, Response, json_response

BOT = {"id": 100000001, "is_bot": True, "first_name": "SalesBot", "username": "salesbot_demo_bot"}
MAX_POLL_SECONDS = 10


def _error(code: int, description: str) -> Response:
    return json_response({"ok": False, "error_code": code, "description": description}, code)


def _multipart(request: Request) -> tuple[dict[str, str], dict[str, str]]:
    """The text fields and the file names of a multipart/form-data body."""
    head = f"Content-Type: {request.headers.get('content-type', '')}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.body)
    fields: dict[str, str] = {}
    files: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        payload = part.get_payload(decode=True)
        if filename is not None:
            files[str(name)] = filename
        elif name and isinstance(payload, bytes):
            fields[str(name)] = payload.decode()
    return fields, files


class SandboxTelegram(LoopbackServer):
    """See the module contract."""

    def __init__(self, token: str, chat_id: str, chats: dict[str, str] | None = None) -> None:
        super().__init__()
        self.token = token
        self.chat_id = chat_id
        self.titles = {chat_id: "Отдел продаж (демо)", **(chats or {})}
        self.messages: list[dict[str, Any]] = []  # sendMessage parameters, in order
        self.sent: list[dict[str, Any]] = []  # everything the bot sent, in order
        self.updates: list[dict[str, Any]] = []  # not yet confirmed by an offset
        self._next_update = 1
        self._next_message = 1
        self._released = False
        self._changed = threading.Condition(self.lock)
        self.voice_forbidden: set[str] = set()  # chats answering sendVoice VOICE_MESSAGES_FORBIDDEN

    def chat(self, chat_id: str) -> dict[str, Any]:
        kind = "private" if not chat_id.startswith("-") else "supergroup"
        return {"id": int(chat_id), "type": kind, "title": self.titles[chat_id]}

    def say(self, text: str, user_id: int, chat_id: str, first_name: str = "Руководитель") -> int:
        """Queue `text` as a message from `user_id` in `chat_id`; returns its update id."""
        with self._changed:
            update_id = self._next_update
            self._next_update += 1
            message = {
                "message_id": self._take_message_id(), "date": int(time.time()), "chat": self.chat(chat_id),
                "from": {"id": user_id, "is_bot": False, "first_name": first_name}, "text": text,
            }  # fmt: skip
            if text.startswith("/"):
                length = len(text.split()[0])
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
            self.updates.append({"update_id": update_id, "message": message})
            self._changed.notify_all()
        return update_id

    def release(self, on: bool = True) -> None:
        """Long polls answer at once from now on (`on`), or wait again (see the module contract)."""
        with self._changed:
            self._released = on
            self._changed.notify_all()

    def wait_sent(self, start: int, timeout: float) -> list[dict[str, Any]]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.sent) > start, timeout)
            return list(self.sent[start:])

    def stop(self) -> None:
        self.release()
        super().stop()

    def _take_message_id(self) -> int:
        number = self._next_message
        self._next_message += 1
        return number

    def route(self, request: Request) -> Response:
        match = re.fullmatch(r"/bot([^/]+)/(\w+)", request.path)
        if match is None:
            return _error(404, "Not Found")
        if match[1] != self.token:
            return _error(401, "Unauthorized")
        params = {k: v[0] for k, v in request.query.items()}
        files: dict[str, str] = {}
        content_type = request.headers.get("content-type", "")
        if "x-www-form-urlencoded" in content_type:
            params |= {k: v[0] for k, v in parse_qs(request.body.decode(), keep_blank_values=True).items()}
        elif "multipart/form-data" in content_type:
            fields, files = _multipart(request)
            params |= fields
        method = match[2].lower()
        if method == "getme":
            return json_response({"ok": True, "result": BOT})
        if method == "getupdates":
            return self._updates(params)
        chat_id = params.get("chat_id", "")
        if chat_id not in self.titles:
            return _error(400, "Bad Request: chat not found")
        chat = self.chat(chat_id)
        if method == "getchat":
            return json_response({"ok": True, "result": chat})
        if method == "deletemessage":
            return json_response({"ok": True, "result": True})
        kinds = {
            "sendmessage": "sendMessage",
            "sendphoto": "sendPhoto",
            "senddocument": "sendDocument",
            "sendvoice": "sendVoice",
            "sendaudio": "sendAudio",
        }
        if method == "sendvoice" and chat_id in self.voice_forbidden:
            return _error(400, "Bad Request: VOICE_MESSAGES_FORBIDDEN")
        if method in kinds:
            entry = dict(params, method=kinds[method])
            if files:
                entry["filename"] = next(iter(files.values()))
            with self._changed:
                number = self._take_message_id()
                if method == "sendmessage":
                    self.messages.append(params)
                self.sent.append(entry)
                self._changed.notify_all()
            message = {"message_id": number, "date": int(time.time()), "chat": chat, "from": BOT,
                       "text": params.get("text", "")}  # fmt: skip
            if method in ("sendvoice", "sendaudio"):  # a clip: its file id is what the bot keeps
                kind = method.removeprefix("send")
                message[kind] = {"file_id": params.get(kind) or f"sandbox-{kind}-{number}", "duration": 0}
            return json_response({"ok": True, "result": message})
        return _error(404, "Not Found: method not in the sandbox")

    def _updates(self, params: dict[str, str]) -> Response:
        offset = int(params.get("offset") or 0)
        wait = min(float(params.get("timeout") or 0), MAX_POLL_SECONDS)
        with self._changed:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]  # confirmed: gone for good
            self._changed.wait_for(lambda: bool(self.updates) or self._released, wait)
            return json_response({"ok": True, "result": json.loads(json.dumps(self.updates))})
