"""On premises: speech-to-text and the analysis on servers of one's own, through
the real command line, against loopback servers that answer the way those servers do
(tests/fakes/local_ai.py): nothing goes to OpenAI, no key is needed, and `check` says plainly
when the chat server ignores the JSON schema."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from salesbot_poller.config import parse_config
from salesbot_poller.domain import Transcript
from salesbot_poller.errors import ConfigError
from salesbot_poller.services.speech import OpenAITranscriber
from tests.conftest import Servers, assert_no_secret, run_cli
from tests.fakes import FakeOpenAI, make_mp3
from tests.fakes.local_ai import CHAT_MODEL, WHISPER_MODEL, chat_server, speech_server

IGNORES = (
    f"chat model: FAILED: chat model {CHAT_MODEL} at 127.0.0.1:{{port}} ignores the JSON schema "
    "(answered: 'Конечно! Звонок прошёл хорошо, менеджер молодец.'): the analysis needs structured "
    "output; see docs/on-premises.md"
)


@pytest.fixture
def local() -> Iterator[dict[str, FakeOpenAI]]:
    """Two servers of one's own: speech-to-text and chat (their modes set by each test)."""
    started = {"speech": speech_server().start(), "chat": chat_server().start()}
    yield started
    for server in started.values():
        server.stop()


def onprem_config(servers: Servers, local: dict[str, FakeOpenAI], openai_lines: str = "") -> Path:
    """The fixture's config with its [openai] section pointing at the local servers, no key."""
    text = servers.config_text()
    start = text.index("[openai]")
    end = text.index("[telegram]")
    section = f"""[openai]
transcription_base_url = "{local["speech"].base_url}/v1"
transcription_model = "{WHISPER_MODEL}"
chat_base_url = "{local["chat"].base_url}/v1"
analysis_model = "{CHAT_MODEL}"
audio_price_per_minute_usd = 0.0
daily_budget_usd = 0
{openai_lines}
"""
    path = servers.tmp / "onprem.toml"
    path.write_text(text[:start] + section + text[end:])
    path.chmod(0o600)
    (servers.tmp / "state").mkdir(mode=0o700, exist_ok=True)  # as install.sh makes it: `check` creates nothing
    return path


def add_call(servers: Servers, note_id: int = 101) -> None:
    servers.amo.add_user(555, "Иван Петров")
    servers.amo.add_entity("lead", 7001, "ООО Ромашка", 555)
    servers.amo.add_call(
        entity_id=7001,
        note_id=note_id,
        duration=125,
        phone="+79991110001",
        link=servers.recordings.add(f"/rec-{note_id}.mp3", make_mp3(3.0)),
        created_at=int(time.time()) - 600,
        responsible_user_id=555,
    )


@pytest.mark.parametrize("json_only", [False, True], ids=["verbose_json", "json_only"])
@pytest.mark.parametrize("schema_mode", ["strict", "schema_only"])
def test_once_on_local_servers_sends_nothing_to_openai(
    servers: Servers, local: dict[str, FakeOpenAI], json_only: bool, schema_mode: str
) -> None:
    local["speech"].transcription_mode = "json_only" if json_only else "as_asked"
    local["chat"].schema_mode = schema_mode
    add_call(servers)
    result = run_cli("once", config=onprem_config(servers, local))
    assert result.returncode == 0, result.stderr
    cards = [m["visible_text"] for m in servers.telegram.messages if "Оценка" in m["visible_text"]]
    assert len(cards) == 1 and "ООО Ромашка" in cards[0]
    assert servers.openai.requests_to(".*") == [], "nothing went to the OpenAI stand-in"
    (upload,) = local["speech"].transcriptions
    assert upload["fields"]["model"] == WHISPER_MODEL and upload["fields"]["response_format"] == "verbose_json"
    (chat,) = local["chat"].chat_requests
    response_format = chat["response_format"]
    assert response_format["type"] == "json_schema" and response_format["json_schema"]["strict"] is True
    assert "properties" in response_format["json_schema"]["schema"], "OpenAI's nesting: llama-server reads it there"
    for server in local.values():  # no key configured: the SDK's placeholder, which such servers ignore
        assert {r.headers.get("authorization") for r in server.requests_to(".*")} == {"Bearer no-key"}
    assert "cycle: events=1 new=1 transcribed=1 analysed=1 notified=1" in result.stderr


def test_a_transcription_without_timestamps_is_one_untimed_segment(
    local: dict[str, FakeOpenAI], tmp_path: Path
) -> None:
    """A server that ignores response_format=verbose_json and answers {"text"}: the text is
    kept, as one segment without timestamps (as for the gpt-4o json models)."""
    audio = tmp_path / "call.mp3"
    audio.write_bytes(make_mp3(3.0))

    def transcribe() -> Transcript:
        client = openai.OpenAI(api_key="no-key", base_url=f"{local['speech'].base_url}/v1", max_retries=0)
        return OpenAITranscriber(client, WHISPER_MODEL, "ru").transcribe(audio)

    timed = transcribe()
    local["speech"].transcription_mode = "json_only"
    untimed = transcribe()
    assert timed.timed and not untimed.timed
    assert len(untimed.segments) == 1 and untimed.segments[0].text == untimed.text
    assert untimed.text.startswith("Менеджер: Добрый день!")
    assert untimed.input_tokens == 0  # local servers report no usage


def test_check_fails_plainly_when_the_chat_server_ignores_the_schema(
    servers: Servers, local: dict[str, FakeOpenAI]
) -> None:
    local["chat"].schema_mode = "ignored"
    result = run_cli("check", config=onprem_config(servers, local))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert f"openai: ok ({WHISPER_MODEL}, {CHAT_MODEL} available)" in lines
    assert IGNORES.format(port=local["chat"].base_url.rsplit(":", 1)[1]) in lines, result.stdout
    (probe,) = local["chat"].chat_requests
    assert probe["max_completion_tokens"] <= 64 and probe["model"] == CHAT_MODEL
    assert list(probe["response_format"]["json_schema"]["schema"]["properties"]) == ["word"]


@pytest.mark.parametrize("schema_mode", ["strict", "schema_only"])
def test_check_says_ok_when_the_chat_server_follows_the_schema(
    servers: Servers, local: dict[str, FakeOpenAI], schema_mode: str
) -> None:
    local["chat"].schema_mode = schema_mode
    result = run_cli("check", config=onprem_config(servers, local))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "chat model: structured output ok (json_schema)" in result.stdout.splitlines()


def test_check_fails_plainly_when_the_chat_server_refuses_json_schema(
    servers: Servers, local: dict[str, FakeOpenAI]
) -> None:
    local["chat"].schema_mode = "json_object_only"
    result = run_cli("check", config=onprem_config(servers, local))
    assert result.returncode == 1
    assert "chat model: FAILED: OpenAI structured-output check: HTTP 500" in result.stdout, result.stdout


def test_keys_of_their_own_go_to_their_server_only_and_are_never_printed(
    servers: Servers, local: dict[str, FakeOpenAI]
) -> None:
    speech_key, chat_key = "stt-secret-0123456789abcdef", "chat-secret-0123456789abcdef"
    local["speech"].api_key, local["chat"].api_key = speech_key, chat_key
    lines = f'transcription_api_key = "{speech_key}"\nchat_api_key = "{chat_key}"'
    add_call(servers)
    config = onprem_config(servers, local, lines)
    ok = run_cli("check", config=config)
    once = run_cli("once", config=config)
    assert ok.returncode == 0 and once.returncode == 0, ok.stdout + once.stderr
    assert {r.headers["authorization"] for r in local["speech"].requests_to(".*")} == {f"Bearer {speech_key}"}
    assert {r.headers["authorization"] for r in local["chat"].requests_to(".*")} == {f"Bearer {chat_key}"}
    for text in (ok.stdout, ok.stderr, once.stdout, once.stderr):
        assert speech_key not in text and chat_key not in text
    assert_no_secret(ok.stdout, once.stderr)


def test_a_key_is_required_only_for_openai_itself() -> None:
    local_only = {"openai": {"base_url": "http://127.0.0.1:8000/v1"}}
    assert not any(p.startswith("openai.") for p in _problems(local_only))
    split = {"openai": {"transcription_base_url": "http://127.0.0.1:8000/v1"}}  # chat still on OpenAI
    assert "openai.api_key: required (or set SALESBOT_OPENAI_API_KEY)" in _problems(split)
    chat_key = split | {"openai": {**split["openai"], "chat_api_key": "sk-chat"}}
    assert not any(p.startswith("openai.") for p in _problems(chat_key))


def _problems(raw: dict[str, dict[str, str]]) -> list[str]:
    try:
        parse_config(raw, {})
    except ConfigError as exc:
        return exc.problems
    return []
