"""On premises, the first hour: every OpenAI error names the setting actually in use (the
transcription or chat URL and key when set, else the shared ones), a base URL without `/v1`
is caught with what to set instead, `check` lists what a server offers when the configured
model is missing, and calls a key accepted only once a request with it succeeded. Through the
real `openai` client and the real command line, against loopback servers (tests/fakes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from salesbot_poller.app import build_analyzer, build_openai, build_transcriber
from salesbot_poller.config import Config, parse_config
from salesbot_poller.domain import CallContext
from salesbot_poller.errors import FatalError, TransientError
from tests.conftest import Servers, run_cli
from tests.fakes import FakeOpenAI, make_mp3
from tests.fakes.local_ai import CHAT_MODEL, WHISPER_MODEL, chat_server, speech_server

CONTEXT = CallContext("in", "Менеджер", "leads", "Клиент", "", "", 60, 1_764_000_000)


@pytest.fixture
def local() -> Iterator[dict[str, FakeOpenAI]]:
    started = {"speech": speech_server().start(), "chat": chat_server().start()}
    yield started
    for server in started.values():
        server.stop()


def config_file(servers: Servers, openai_lines: str) -> Path:
    """The fixture's config with its [openai] section replaced by `openai_lines`."""
    text = servers.config_text()
    start, end = text.index("[openai]"), text.index("[telegram]")
    path = servers.tmp / "onprem.toml"
    path.write_text(text[:start] + "[openai]\n" + openai_lines + "\ndaily_budget_usd = 0\n" + text[end:])
    path.chmod(0o600)
    return path


def local_lines(local: dict[str, FakeOpenAI], speech_path: str = "/v1", chat_path: str = "/v1") -> str:
    return (
        f'transcription_base_url = "{local["speech"].base_url}{speech_path}"\n'
        f'transcription_model = "{WHISPER_MODEL}"\n'
        f'chat_base_url = "{local["chat"].base_url}{chat_path}"\n'
        f'analysis_model = "{CHAT_MODEL}"\n'
        "audio_price_per_minute_usd = 0\ninput_token_price_per_million_usd = 0\noutput_token_price_per_million_usd = 0"
    )


def port(server: FakeOpenAI) -> str:
    return server.base_url.rsplit(":", 1)[1]


def config_of(openai_section: dict[str, str]) -> Config:
    return parse_config(
        {
            "amocrm": {"base_url": "https://example.amocrm.ru", "long_lived_token": "t"},
            "openai": openai_section,
            "telegram": {"bot_token": "123456:abc", "chat_id": "-1001"},
        },
        {},
        require_secrets=False,
    )


def transcribe(config: Config, tmp_path: Path) -> None:
    audio = tmp_path / "call.mp3"
    audio.write_bytes(make_mp3(3.0))
    build_transcriber(config, build_openai(config, config.openai.transcription), None).transcribe(audio)


def test_a_chat_url_without_v1_names_the_setting_and_the_url_to_set(
    servers: Servers, local: dict[str, FakeOpenAI]
) -> None:
    """The chat server serves /v1/… and has no model list: `check` gets to the chat request,
    whose 404 says where it went and what to set."""
    local["chat"].lists_models = False
    base = local["chat"].base_url
    result = run_cli("check", config=config_file(servers, local_lines(local, chat_path="")))
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        f"chat model: FAILED: the server answered 404 at {base}/chat/completions; most servers serve /v1/… — "
        f'set openai.chat_base_url = "{base}/v1"'
    ) in result.stdout.splitlines(), result.stdout


def test_check_catches_a_url_without_v1_at_the_model_list(servers: Servers, local: dict[str, FakeOpenAI]) -> None:
    base = local["speech"].base_url
    result = run_cli("check", config=config_file(servers, local_lines(local, speech_path="")))
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        f"openai: FAILED: the server answered 404 at {base}/models; most servers serve /v1/… — "
        f'set openai.transcription_base_url = "{base}/v1"'
    ) in result.stdout.splitlines(), result.stdout


def test_a_server_serving_at_its_root_is_not_told_to_add_v1(servers: Servers, local: dict[str, FakeOpenAI]) -> None:
    local["speech"].prefix = local["chat"].prefix = ""
    result = run_cli("check", config=config_file(servers, local_lines(local, speech_path="", chat_path="")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"openai: ok ({WHISPER_MODEL}, {CHAT_MODEL} available)" in result.stdout.splitlines()


def test_the_pipeline_names_the_url_setting_in_use(local: dict[str, FakeOpenAI], tmp_path: Path) -> None:
    """Speech-to-text and the analysis, through the real client, at URLs without /v1."""
    speech, chat = local["speech"].base_url, local["chat"].base_url
    own = config_of({"transcription_base_url": speech, "chat_base_url": chat, "analysis_model": CHAT_MODEL})
    with pytest.raises(FatalError) as stt:
        transcribe(own, tmp_path)
    assert str(stt.value) == (
        f"the server answered 404 at {speech}/audio/transcriptions; most servers serve /v1/… — "
        f'set openai.transcription_base_url = "{speech}/v1"'
    )
    with pytest.raises(FatalError) as chat_error:
        build_analyzer(own, build_openai(own, own.openai.chat)).analyse("Менеджер: Добрый день!", CONTEXT)
    assert f'set openai.chat_base_url = "{chat}/v1"' in str(chat_error.value)
    shared = config_of({"base_url": speech})  # one server for both: the shared setting is named
    with pytest.raises(FatalError, match=f'set openai.base_url = "{speech}/v1"'):
        transcribe(shared, tmp_path)


def test_a_server_that_cannot_be_reached_names_its_setting(tmp_path: Path) -> None:
    closed = FakeOpenAI().start()
    url = f"{closed.base_url}/v1"
    closed.stop()
    config = config_of({"transcription_base_url": url, "base_url": "http://127.0.0.1:9/v1"})
    with pytest.raises(
        TransientError, match=r"cannot connect at 127\.0\.0\.1:\d+ \(check openai\.transcription_base_url "
    ):
        transcribe(config, tmp_path)


def test_a_refused_key_names_the_key_setting_in_use(servers: Servers, local: dict[str, FakeOpenAI]) -> None:
    local["chat"].api_key = "the-right-chat-key-0123456789"
    lines = local_lines(local) + '\nchat_api_key = "a-wrong-chat-key-0123456789"'
    result = run_cli("check", config=config_file(servers, lines))
    assert result.returncode == 1
    assert (
        f"openai: FAILED: OpenAI model list: the server at 127.0.0.1:{port(local['chat'])} rejected the key "
        "(HTTP 401): set a valid openai.chat_api_key"
    ) in result.stdout.splitlines(), result.stdout
    assert "a-wrong-chat-key" not in result.stdout + result.stderr


def test_check_lists_what_the_server_offers_when_the_model_is_missing(
    servers: Servers, local: dict[str, FakeOpenAI]
) -> None:
    local["chat"].models = tuple(f"model-{n:02}" for n in range(12))
    result = run_cli("check", config=config_file(servers, local_lines(local)))
    offered = ", ".join(f"model-{n:02}" for n in range(10))
    chat = local["chat"].base_url
    assert (
        f"openai: warning: openai.analysis_model: {CHAT_MODEL} is not offered by {chat}/v1; "
        f"it offers: {offered} and 2 more"
    ) in result.stdout.splitlines(), result.stdout
    assert "key" not in result.stdout.replace("api_key", ""), "no key was sent: none is called ok"


def test_a_key_is_called_accepted_only_once_a_request_with_it_succeeded(
    servers: Servers, local: dict[str, FakeOpenAI]
) -> None:
    """The speech server checks its key but has no model list: its key is not verified; the
    chat server's model list was read with its key: that one is accepted."""
    speech_key, chat_key = "stt-key-0123456789abcdef", "chat-key-0123456789abcdef"
    local["speech"].api_key, local["chat"].api_key = speech_key, chat_key
    local["speech"].lists_models = False
    lines = local_lines(local) + f'\ntranscription_api_key = "{speech_key}"\nchat_api_key = "{chat_key}"'
    result = run_cli("check", config=config_file(servers, lines))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        f"openai: ok ({CHAT_MODEL} available; key openai.chat_api_key accepted; 127.0.0.1:{port(local['speech'])} "
        f"has no model list: {WHISPER_MODEL} and the key in openai.transcription_api_key not verified there)"
    ) in result.stdout.splitlines(), result.stdout


def test_a_timeout_says_which_server(local: dict[str, FakeOpenAI]) -> None:
    config = config_of({"chat_base_url": f"{local['chat'].base_url}/v1", "analysis_model": CHAT_MODEL})
    local["chat"].chat_delay = 1.0
    client = build_openai(config, config.openai.chat).with_options(timeout=0.2)
    with pytest.raises(TransientError, match=f"timed out at 127.0.0.1:{port(local['chat'])}"):
        build_analyzer(config, client).analyse("Менеджер: Добрый день!", CONTEXT)
