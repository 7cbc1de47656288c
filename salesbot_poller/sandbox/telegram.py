"""The Telegram Bot API sandbox: getMe, getChat and sendMessage, which it records.

Parameters come in the query string or a form body (telebot sends both ways).
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qs

from salesbot_poller.sandbox.http import LoopbackServer, Request, Response, json_response

BOT = {"id": 100000001, "is_bot": True, "first_name": "SalesBot", "username": "salesbot_demo_bot"}


def _error(code: int, description: str) -> Response:
    return json_response({"ok": False, "error_code": code, "description": description}, code)


class SandboxTelegram(LoopbackServer):
    def __init__(self, token: str, chat_id: str) -> None:
        super().__init__()
        self.token = token
        self.chat_id = chat_id
        self.messages: list[dict[str, Any]] = []  # sendMessage parameters, in order

    def route(self, request: Request) -> Response:
        match = re.fullmatch(r"/bot([^/]+)/(\w+)", request.path)
        if match is None:
            return _error(404, "Not Found")
        if match[1] != self.token:
            return _error(401, "Unauthorized")
        params = {k: v[0] for k, v in request.query.items()}
        if "x-www-form-urlencoded" in request.headers.get("content-type", ""):
            params |= {k: v[0] for k, v in parse_qs(request.body.decode(), keep_blank_values=True).items()}
        method = match[2].lower()
        if method == "getme":
            return json_response({"ok": True, "result": BOT})
        chat = {"id": int(self.chat_id), "type": "supergroup", "title": "Отдел продаж (демо)"}
        if params.get("chat_id") != self.chat_id:
            return _error(400, "Bad Request: chat not found")
        if method == "getchat":
            return json_response({"ok": True, "result": chat})
        if method == "sendmessage":
            with self.lock:
                self.messages.append(params)
                number = len(self.messages)
            message = {"message_id": number, "date": int(time.time()), "chat": chat, "from": BOT,
                       "text": params.get("text", "")}  # fmt: skip
            return json_response({"ok": True, "result": message})
        return _error(404, "Not Found: method not in the sandbox")
