"""Loopback stand-ins for OpenAI-compatible servers of one's own, answering the way the
servers' documentation and source say they do (docs/on-premises.md is written from the same):

- speaches (faster-whisper): `/v1/audio/transcriptions` with `json` and `verbose_json`
  (segments with start/end); no key unless started with `API_KEY`; reports no usage.
- a speech-to-text server that answers `{"text": ...}` whatever `response_format` asked
  (no segments, no timestamps).
- llama-server (llama.cpp): reads the schema from `response_format.json_schema.schema` and
  does not look at `strict`; `/v1/models` lists the one model loaded (its alias).
- Ollama: `response_format` is among the supported fields of `/v1/chat/completions`; the key
  is "required but ignored".
- a chat server that accepts `response_format` and answers plain text anyway (the schema
  ignored), and an older llama-server that refuses `type: json_schema` with 500.
"""

from __future__ import annotations

from .openai_api import FakeOpenAI

WHISPER_MODEL = "Systran/faster-whisper-small"
CHAT_MODEL = "qwen2.5-7b-instruct"


def speech_server(*, json_only: bool = False, api_key: str | None = None) -> FakeOpenAI:
    """A local speech-to-text server (speaches-like); `json_only`: one that ignores
    `response_format` and answers `{"text": ...}` only."""
    server = FakeOpenAI(api_key=api_key)
    server.models = (WHISPER_MODEL,)
    server.reports_usage = False
    server.transcription_mode = "json_only" if json_only else "as_asked"
    return server


def chat_server(schema_mode: str = "schema_only", *, api_key: str | None = None) -> FakeOpenAI:
    """A local chat server: `schema_mode` as `FakeOpenAI.schema_mode` ("schema_only" is
    llama-server and Ollama; "strict" a server that enforces OpenAI's strict rules)."""
    server = FakeOpenAI(api_key=api_key)
    server.models = (CHAT_MODEL,)
    server.schema_mode = schema_mode
    return server
