"""The OpenAI-compatible sandbox: transcriptions, chat completions (structured output), models.

Every recording gets the canned Russian transcript; every analysis request gets
`canned.canned_answer()` as the JSON content the SDK parses into the answer model, the
weekly report's objection grouping `canned.canned_grouping`, and `check`'s probe of
structured output its one word.
"""

from __future__ import annotations

import json
import time

from salesbot_poller.sandbox.canned import TRANSCRIPT, canned_answer, canned_grouping
from salesbot_poller.sandbox.http import LoopbackServer, Request, Response, json_response

MODELS = ("whisper-1", "gpt-4o-mini")


def _error(status: int, message: str, code: str | None = None) -> Response:
    return json_response({"error": {"message": message, "type": "invalid_request_error", "code": code}}, status)


class SandboxOpenAI(LoopbackServer):
    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.transcriptions = 0
        self.completions = 0

    def route(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        path = request.path.rstrip("/")
        if request.method == "POST" and path == "/v1/audio/transcriptions":
            if b'name="file"' not in request.body:
                return _error(400, "Missing required parameter: 'file'.")
            with self.lock:
                self.transcriptions += 1
            return json_response({"text": TRANSCRIPT, "usage": {"type": "duration", "seconds": 125}})
        if request.method == "POST" and path == "/v1/chat/completions":
            return self._completion(request)
        if request.method == "GET" and path == "/v1/models":
            models = [{"id": m, "object": "model", "created": 0, "owned_by": "sandbox"} for m in MODELS]
            return json_response({"object": "list", "data": models})
        return _error(404, f"Invalid URL ({request.method} {request.path})")

    def _completion(self, request: Request) -> Response:
        body = json.loads(request.body or b"{}")
        with self.lock:
            self.completions += 1
            number = self.completions
        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("name", "")
        if schema == "GroupsAnswer":  # the weekly report's objection grouping
            messages = body.get("messages") or [{}]
            content = json.dumps(canned_grouping(str(messages[-1].get("content", ""))), ensure_ascii=False)
        elif schema == "_Probe":  # `check`: does the chat model follow a JSON schema?
            content = json.dumps({"word": "ok"})
        else:
            content = json.dumps(canned_answer(), ensure_ascii=False)
        return json_response({
            "id": f"chatcmpl-sandbox-{number}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", MODELS[1]),
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content, "refusal": None}}],
            "usage": {"prompt_tokens": 900, "completion_tokens": 250, "total_tokens": 1150},
        })  # fmt: skip
