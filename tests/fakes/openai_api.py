"""A fake OpenAI API: audio transcriptions, chat completions, models."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import time
from collections.abc import Callable, Iterator

import av

from .base import (
    JSON,
    FakeServer,
    RecordedRequest,
    Reply,
    json_reply,
    parse_multipart,
    text_reply,
)

MODELS = (
    "whisper-1",
    "gpt-4o-mini",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o",
    "gpt-4o-transcribe-diarize",
)
UPLOAD_LIMIT = 25 * 1024 * 1024  # the API's per-request limit (413 above it)
GPT4O_MAX_SECONDS = 1400  # reported: gpt-4o transcription models reject longer audio
# (start, end, text) of a whisper-1 verbose_json segment; (start, end, speaker, text) diarized.
SegmentsFn = Callable[[bytes, str, dict[str, str]], list[tuple[float, float, str]]]
DiarizeFn = Callable[[bytes, str, dict[str, str]], list[tuple[float, float, str, str]]]
UNDECODABLE = "The audio file could not be decoded or its format is not supported."
# Models that only speak json/text (verbose_json, srt and vtt are whisper-1 only).
_JSON_ONLY_PREFIXES = ("gpt-4o", "gpt-transcribe")


def error_reply(
    status: int, message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> Reply:
    """An OpenAI-style error body."""
    return json_reply({"error": {"message": message, "type": type_, "param": param, "code": code}}, status)


def audio_duration(data: bytes) -> float | None:
    """Duration in seconds via PyAV; 0.0 when unknown; None when not decodable audio."""
    try:
        with av.open(io.BytesIO(data), "r") as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            decoded = next(container.decode(stream), None)
            if decoded is None:
                return None
            if container.duration:
                return float(container.duration / av.time_base)
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            return 0.0
    except (av.FFmpegError, ValueError, StopIteration):
        return None


def default_transcribe(data: bytes, filename: str, fields: dict[str, str]) -> str:
    """A deterministic Russian "transcript" naming the file size and sha1 prefix."""
    digest = hashlib.sha1(data).hexdigest()[:8]
    return f"Менеджер: Добрый день! Клиент: Здравствуйте, [{len(data)} байт, {digest}]"


def _message_text(message: JSON) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def rubric_ids(body: JSON) -> list[str]:
    """The rubric item ids the request's JSON schema asks for: the properties of its
    `rubric` object (one per item), in order."""
    schema = request_schema(body)
    defs = schema.get("$defs") or {}
    rubric = (schema.get("properties") or {}).get("rubric") or {}
    if "$ref" in rubric:
        rubric = defs.get(str(rubric["$ref"]).rsplit("/", 1)[1], {})
    return list((rubric.get("properties") or {}).keys())


def request_schema(body: JSON) -> JSON:
    """The JSON schema a chat request asks for (OpenAI's nesting, `json_schema.schema`), {} when none."""
    response_format = body.get("response_format") or {}
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return {}
    wrapper = response_format.get("json_schema") or {}
    schema = wrapper.get("schema") if isinstance(wrapper, dict) else None
    return schema if isinstance(schema, dict) else {}


def schema_example(schema: JSON, defs: JSON | None = None) -> object:
    """A small value that follows `schema` (enough for the one-field probe of `check`)."""
    defs = schema.get("$defs", defs or {})
    if "$ref" in schema:
        return schema_example(defs[str(schema["$ref"]).rsplit("/", 1)[1]], defs)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return schema_example(schema[key][0], defs)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {name: schema_example(sub, defs) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return []
    return {"string": "ok", "integer": 0, "number": 0.0, "boolean": True}.get(str(kind))


def not_strict(schema: object, where: str = "schema") -> str | None:
    """Why OpenAI's strict mode would refuse `schema` (every object closed, every property
    required), or None."""
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            props = schema.get("properties") or {}
            if schema.get("additionalProperties") is not False:
                return f"{where}: 'additionalProperties' is required to be supplied and to be false"
            if sorted(schema.get("required") or []) != sorted(props):
                return f"{where}: 'required' is required to include every key in 'properties'"
        for key, value in schema.items():
            found = not_strict(value, f"{where}.{key}")
            if found:
                return found
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            found = not_strict(value, f"{where}[{i}]")
            if found:
                return found
    return None


def default_analysis(body: JSON) -> JSON:
    """A valid analysis built from the last user message: every rubric item of the request's
    schema gets a verdict (the first ones done, then partly, missed, not applicable). A
    request whose schema is not the analysis (the probe of `check`) gets an answer in its schema."""
    schema = request_schema(body)
    if schema and "summary" not in (schema.get("properties") or {}):
        example = schema_example(schema)
        return example if isinstance(example, dict) else {}
    messages = body.get("messages") or []
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    text = _message_text(users[-1] if users else (messages[-1] if messages else {}))
    verdicts = ["done", "done", "partly", "missed", "not_applicable"]
    rubric = {
        item_id: {
            "verdict": verdicts[min(i, len(verdicts) - 1)],
            "evidence": "Добрый день!" if i == 0 else "",
            "confidence": 0.9,
        }
        for i, item_id in enumerate(rubric_ids(body))
    }
    return {
        "summary": "Итог: " + text[:60],
        "topic": "поставка",
        "rubric": rubric,
        "client_needs": ["Поставка до конца месяца"],
        "objections": [{"objection": "Дорого", "handling": "Предложил скидку за объём"}],
        "next_step": {"action": "Отправить КП", "due_date": "2026-11-27"},
        "risk_flags": [],
        "sentiment": "positive",
    }


class FakeOpenAI(FakeServer):
    """Fake OpenAI API under `/v1`. Contract:

    - `Authorization: Bearer <api_key>` required, else 401 `invalid_api_key` (key not echoed).
    - `POST /v1/audio/transcriptions` (multipart): records `transcriptions` (filename, size,
      sha1, fields, the audio's `seconds`); text from `transcribe_fn(data, filename, fields)`; `response_format`
      json (default) / text / verbose_json / srt / vtt / diarized_json; undecodable audio
      -> 400; an upload over `max_upload_bytes` (25 MB) -> 413; waits `transcribe_delay`.
      Each model answers in its real shape: whisper-1 `usage` in seconds, verbose_json
      `segments` from `segments_fn` (else one segment); gpt-4o models json/text only,
      `usage` in tokens, audio over 1400 s -> 400; `*-diarize` only json/text/diarized_json,
      no `prompt`, `chunking_strategy` required over 30 s, segments (speaker labels) from
      `diarize_fn` (else one segment of speaker "A").
    - `POST /v1/chat/completions`: records `chat_requests`; `analysis_fn(body)` returns a
      dict (sent as JSON content) or a str (sent verbatim, e.g. to test broken JSON);
      `finish_reason` is `chat_finish_reason` ("stop"); waits `chat_delay` seconds first.
    - `GET /v1/models`, `GET /v1/models/{id}`; `lists_models = False`: 404 there (a server
      with no model list).
    - `prefix` ("/v1") is where all of it is served; "" serves it at the root, as a server
      behind a proxy that strips `/v1` would. Anything else is 404 "Invalid URL".
    - Concurrency, measured here and not trusted from the client: `in_flight` transcription
      and chat requests being answered right now, `max_in_flight` the most at any instant
      (both from the moment the request is routed until its answer is ready); each
      `transcriptions` record has `received` and `answered` (`time.monotonic()`).
    """

    def __init__(self, api_key: str | None = "sk-test-key") -> None:
        super().__init__()
        self.api_key = api_key  # None: no key needed (a server of one's own), any header accepted
        self.models: tuple[str, ...] = MODELS
        self.prefix = "/v1"
        self.lists_models = True
        # How a server of one's own answers (see tests/fakes/local_ai.py): transcription
        # "as_asked" (like OpenAI) or "json_only" (ignores response_format: {"text"} only);
        # the JSON schema of a chat request "strict" (OpenAI: refuses a schema strict mode
        # cannot take), "schema_only" (follows json_schema.schema, ignores strict: llama.cpp,
        # Ollama), "ignored" (answers plain text), "json_object_only" (refuses type json_schema
        # with 500, as llama-server did before it learnt json_schema).
        self.transcription_mode = "as_asked"
        self.schema_mode = "strict"
        self.reports_usage = True
        self.ignored_answer = "Конечно! Звонок прошёл хорошо, менеджер молодец."
        self.transcriptions: list[JSON] = []
        self.chat_requests: list[JSON] = []
        self.chat_usage: list[tuple[int, int]] = []  # (prompt, completion) tokens answered
        self.transcribe_fn: Callable[[bytes, str, dict[str, str]], str] = default_transcribe
        self.segments_fn: SegmentsFn | None = None
        self.diarize_fn: DiarizeFn | None = None
        self.max_upload_bytes = UPLOAD_LIMIT
        self.analysis_fn: Callable[[JSON], JSON | str] = default_analysis
        self.transcribe_delay = 0.0
        self.chat_delay = 0.0
        self.chat_finish_reason = "stop"
        self._completion_seq = 0
        self.in_flight = 0
        self.max_in_flight = 0

    @contextlib.contextmanager
    def _counted(self) -> Iterator[None]:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self.lock:
                self.in_flight -= 1

    def route(self, req: RecordedRequest) -> Reply:
        if self.api_key is not None and req.headers.get("authorization", "") != f"Bearer {self.api_key}":
            return error_reply(401, "Incorrect API key provided.", code="invalid_api_key")
        path = req.path.rstrip("/")
        if not path.startswith(f"{self.prefix}/"):
            return error_reply(404, f"Invalid URL ({req.method} {req.path})")
        path = path.removeprefix(self.prefix)
        if req.method == "POST" and path == "/audio/transcriptions":
            with self._counted():
                return self._transcribe(req)
        if req.method == "POST" and path == "/chat/completions":
            with self._counted():
                return self._chat(req)
        if path.startswith("/models") and not self.lists_models:
            return error_reply(404, f"Invalid URL ({req.method} {req.path})")
        if req.method == "GET" and path == "/models":
            return json_reply({"object": "list", "data": [self._model(m) for m in self.models]})
        if req.method == "GET" and path.startswith("/models/"):
            model = path.removeprefix("/models/")
            if model in self.models:
                return json_reply(self._model(model))
            return error_reply(404, f"The model '{model}' does not exist", param="model", code="model_not_found")
        return error_reply(404, f"Invalid URL ({req.method} {req.path})")

    @staticmethod
    def _model(model_id: str) -> JSON:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "openai"}

    # transcriptions ------------------------------------------------------------------------
    def _transcribe(self, req: RecordedRequest) -> Reply:
        ctype = req.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            return error_reply(400, "Expected multipart/form-data")
        fields, files = parse_multipart(ctype, req.body)
        upload = files.get("file")
        if upload is None:
            return error_reply(400, "Missing required parameter: 'file'.", param="file")
        model = fields.get("model")
        if not model:
            return error_reply(400, "you must provide a model parameter", param="model")
        fmt = fields.get("response_format", "json")
        if fmt not in ("json", "text", "verbose_json", "srt", "vtt", "diarized_json"):
            return error_reply(400, f"Invalid value for 'response_format': '{fmt}'.", param="response_format")
        diarize = "diarize" in model
        if (fmt == "diarized_json") != diarize and fmt not in ("json", "text"):
            return error_reply(
                400,
                f"response_format '{fmt}' is not compatible with model '{model}'.",
                param="response_format",
                code="unsupported_value",
            )
        if fmt not in ("json", "text", "diarized_json") and model.startswith(_JSON_ONLY_PREFIXES):
            return error_reply(
                400,
                f"response_format '{fmt}' is not compatible with model '{model}'. Use 'json' or 'text' instead.",
                param="response_format",
                code="unsupported_value",
            )
        if diarize and fields.get("prompt"):
            return error_reply(
                400, "Prompt is not supported for diarization models.", param="prompt", code="unsupported_value"
            )
        if len(upload.data) > self.max_upload_bytes:
            return error_reply(
                413,
                f"Maximum content size limit ({self.max_upload_bytes}) exceeded ({len(upload.data)} bytes read)",
                code="content_size_limit_exceeded",
            )
        filename = upload.filename or "file"
        record: JSON = {
            "filename": filename,
            "size": len(upload.data),
            "sha1": hashlib.sha1(upload.data).hexdigest(),
            "fields": dict(fields),
            "content_type": upload.content_type,
            "received": time.monotonic(),
            "seconds": audio_duration(upload.data),  # what was uploaded (and billed), None: not audio
        }
        with self.lock:
            self.transcriptions.append(record)
        try:
            return self._transcription(upload.data, filename, fields, model, fmt, diarize)
        finally:
            record["answered"] = time.monotonic()

    def _transcription(
        self, data: bytes, filename: str, fields: dict[str, str], model: str, fmt: str, diarize: bool
    ) -> Reply:
        if self.transcribe_delay:
            time.sleep(self.transcribe_delay)
        duration = audio_duration(data)
        if duration is None:
            return error_reply(400, UNDECODABLE)
        if model.startswith("gpt-4o") and duration > GPT4O_MAX_SECONDS:
            return error_reply(
                400,
                f"audio duration {duration} seconds is longer than "
                f"{GPT4O_MAX_SECONDS} seconds which is the maximum for this model",
                param="file",
                code="invalid_value",
            )
        if diarize and duration > 30 and not fields.get("chunking_strategy"):
            return error_reply(
                400,
                "chunking_strategy is required for diarization models when the input is longer than 30 seconds.",
                param="chunking_strategy",
                code="invalid_value",
            )
        if fmt == "diarized_json":
            return json_reply(self._diarized(data, filename, fields, duration))
        text = self.transcribe_fn(data, filename, fields)
        if self.transcription_mode == "json_only":  # whatever was asked: text only, no usage
            return json_reply({"text": text})
        usage: JSON
        if model.startswith(_JSON_ONLY_PREFIXES):
            audio_tokens = math.ceil(duration * 10)
            text_tokens = len(fields.get("prompt", "")) // 4
            usage = {
                "type": "tokens",
                "input_tokens": audio_tokens + text_tokens,
                "output_tokens": max(1, len(text) // 4),
                "total_tokens": audio_tokens + text_tokens + max(1, len(text) // 4),
                "input_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
            }
        else:
            usage = {"type": "duration", "seconds": math.ceil(duration)}
        if fmt == "text":
            return text_reply(text)
        if fmt in ("srt", "vtt"):
            return text_reply(self._subtitles(fmt, text, duration))
        if fmt == "json":
            return json_reply({"text": text, "usage": usage} if self.reports_usage else {"text": text})
        spans = self.segments_fn(data, filename, fields) if self.segments_fn else [(0.0, duration, text)]
        segments = [
            {
                "id": i,
                "seek": 0,
                "start": start,
                "end": end,
                "text": " " + words,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": -0.2,
                "compression_ratio": 1.0,
                "no_speech_prob": 0.01,
            }
            for i, (start, end, words) in enumerate(spans)
        ]
        if self.segments_fn:
            text = " ".join(words for _, _, words in spans)
        verbose: JSON = {
            "task": "transcribe",
            "language": "russian",
            "duration": duration,
            "text": text,
            "segments": segments,
        }
        return json_reply(verbose | ({"usage": usage} if self.reports_usage else {}))

    def _diarized(self, data: bytes, filename: str, fields: dict[str, str], duration: float) -> JSON:
        if self.diarize_fn:
            spans = self.diarize_fn(data, filename, fields)
        else:
            spans = [(0.0, duration, "A", self.transcribe_fn(data, filename, fields))]
        segments = [
            {
                "type": "transcript.text.segment",
                "id": f"seg_{i}",
                "start": start,
                "end": end,
                "speaker": speaker,
                "text": words,
            }
            for i, (start, end, speaker, words) in enumerate(spans)
        ]
        text = " ".join(words for _, _, _, words in spans)
        audio_tokens = math.ceil(duration * 10)
        out_tokens = max(1, len(text) // 4)
        return {
            "task": "transcribe",
            "duration": duration,
            "text": text,
            "segments": segments,
            "usage": {
                "type": "tokens",
                "input_tokens": audio_tokens,
                "output_tokens": out_tokens,
                "total_tokens": audio_tokens + out_tokens,
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
            },
        }

    @staticmethod
    def _subtitles(fmt: str, text: str, duration: float) -> str:
        def stamp(sec: float, sep: str) -> str:
            ms = round(sec * 1000)
            return f"{ms // 3600000:02}:{ms // 60000 % 60:02}:{ms // 1000 % 60:02}{sep}{ms % 1000:03}"

        if fmt == "srt":
            return f"1\n{stamp(0, ',')} --> {stamp(duration, ',')}\n{text}\n\n"
        return f"WEBVTT\n\n{stamp(0, '.')} --> {stamp(duration, '.')}\n{text}\n\n"

    # chat ----------------------------------------------------------------------------------
    def _chat(self, req: RecordedRequest) -> Reply:
        try:
            body = req.json()
        except ValueError:
            return error_reply(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict) or not body.get("model") or not body.get("messages"):
            return error_reply(400, "Missing required parameter: 'model' or 'messages'.")
        with self.lock:
            self.chat_requests.append(body)
            self._completion_seq += 1
            seq = self._completion_seq
        response_type = (body.get("response_format") or {}).get("type")
        if self.schema_mode == "json_object_only" and response_type not in (None, "text", "json_object"):
            return json_reply(
                {
                    "error": {
                        "code": 500,
                        "type": "server_error",
                        "message": 'response_format type must be one of "text" or "json_object", '
                        f"but got: {response_type}",
                    }
                },
                500,
            )
        json_schema = (body.get("response_format") or {}).get("json_schema") or {}
        if self.schema_mode == "strict" and json_schema.get("strict"):
            refused = not_strict(json_schema.get("schema"))
            if refused:
                return error_reply(
                    400,
                    f"Invalid schema for response_format '{json_schema.get('name')}': {refused}.",
                    param="response_format",
                    code="invalid_json_schema",
                )
        if self.chat_delay:
            time.sleep(self.chat_delay)
        result = self.ignored_answer if self.schema_mode == "ignored" else self.analysis_fn(body)
        content = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
        prompt_tokens = max(1, len(json.dumps(body["messages"], ensure_ascii=False)) // 4)
        completion_tokens = max(1, len(content) // 4)
        with self.lock:
            self.chat_usage.append((prompt_tokens, completion_tokens))
        return json_reply(
            {
                "id": f"chatcmpl-{seq}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "finish_reason": self.chat_finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )
