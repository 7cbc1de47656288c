"""Config loading: the issue's exact shape, environment overrides, every problem at once."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from salesbot_poller.config import config_path, load_config, parse_config
from salesbot_poller.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {
    "SALESBOT_AMOCRM_LONG_LIVED_TOKEN": "amo-secret-token",
    "SALESBOT_OPENAI_API_KEY": "sk-secret-key",
    "SALESBOT_TELEGRAM_BOT_TOKEN": "123:SECRET",
    "SALESBOT_TELEGRAM_CHAT_ID": "-1001234567890",
}


def test_the_shipped_example_is_valid_once_secrets_come_from_the_environment() -> None:
    config = load_config(ROOT / "config.example.toml", SECRETS)
    assert config.amocrm.base_url == "https://example.amocrm.ru"
    assert config.poller.interval_seconds == 60 and config.poller.min_duration_seconds == 10
    assert config.openai.api_key.get_secret_value() == "sk-secret-key"
    assert config.telegram.chat_id == "-1001234567890"


def test_the_example_has_exactly_the_documented_keys_each_commented() -> None:
    text = (ROOT / "config.example.toml").read_text()
    raw = tomllib.loads(text)
    assert {s: sorted(v) for s, v in raw.items()} == {
        "amocrm": sorted(
            [
                "base_url",
                "long_lived_token",
                "client_id",
                "client_secret",
                "redirect_uri",
                "refresh_token",
                "access_token",
                "timezone",
                "write_back",
                "create_tasks",
                "max_rps",
            ]
        ),
        "openai": sorted(
            [
                "api_key",
                "base_url",
                "transcription_model",
                "analysis_model",
                "language",
                "diarize_model",
                "vocabulary_prompt",
                "audio_price_per_minute_usd",
                "input_token_price_per_million_usd",
                "output_token_price_per_million_usd",
                "daily_budget_usd",
            ]
        ),
        "telegram": sorted(
            [
                "bot_token",
                "chat_id",
                "api_url",
                "attach_transcript",
                "alert_below_score",
                "alert_chat_id",
                "alert_message_thread_id",
                "digest_time",
                "routes",
            ]
        ),
        "poller": sorted(
            [
                "interval_seconds",
                "initial_lookback_minutes",
                "min_duration_seconds",
                "retry_delay_seconds",
                "missed_call_sla_minutes",
                "log_level",
                "max_attempts",
            ]
        ),
        "storage": sorted(["database", "audio_dir", "max_recording_mb", "keep_audio"]),
        "analysis": sorted(["prompt_file", "rubric"]),
        "audio": sorted(
            [
                "manager_channel",
                "manager_channel_by_direction",
                "manager_channel_by_source",
                "upload_format",
                "bitrate_kbps",
                "chunk_overlap_seconds",
            ]
        ),
    }
    key_lines = [line for line in text.splitlines() if "=" in line and not line.startswith("#")]
    uncommented = [line for line in key_lines if "#" not in line and not line.startswith("access_token")]
    assert uncommented == []


def test_every_problem_is_reported_at_once_each_naming_its_key() -> None:
    raw = {
        "amocrm": {"base_url": "ftp://nope", "colour": "red"},
        "poller": {"interval_seconds": 0, "min_duration_seconds": "ten"},
        "telegram": {"bot_token": "no-colon"},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {})
    problems = caught.value.problems
    for key in (
        "amocrm.base_url",
        "amocrm.colour: unknown key",
        "poller.interval_seconds",
        "poller.min_duration_seconds",
        "telegram.bot_token",
        "openai.api_key",
        "telegram.chat_id",
        "amocrm.long_lived_token",
    ):
        assert any(p.startswith(key) for p in problems), (key, problems)


def test_a_bad_secret_is_named_but_never_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"telegram": {"bot_token": "supersecretvalue"}}, {})
    assert "telegram.bot_token" in str(caught.value) and "supersecretvalue" not in str(caught.value)


def test_environment_overrides_file_and_file_variables_are_read(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-file\n")
    env = SECRETS | {"SALESBOT_POLLER_INTERVAL_SECONDS": "1", "SALESBOT_OPENAI_API_KEY_FILE": str(key_file)}
    env.pop("SALESBOT_OPENAI_API_KEY")
    config = parse_config({"amocrm": {"base_url": "https://a.kommo.com"}, "poller": {"interval_seconds": 300}}, env)
    assert config.poller.interval_seconds == 1
    assert config.openai.api_key.get_secret_value() == "sk-from-file"


def test_partial_oauth_names_the_missing_keys() -> None:
    env = {k: v for k, v in SECRETS.items() if "AMOCRM" not in k}
    with pytest.raises(ConfigError) as caught:
        parse_config({"amocrm": {"base_url": "https://a.amocrm.ru", "client_id": "id", "refresh_token": "r"}}, env)
    assert caught.value.problems == [
        "amocrm.client_secret: required for OAuth (or set amocrm.long_lived_token)",
        "amocrm.redirect_uri: required for OAuth (or set amocrm.long_lived_token)",
    ]


def test_status_needs_no_secrets() -> None:
    config = parse_config({"storage": {"database": "sqlite:///x.db"}}, {}, require_secrets=False)
    assert config.storage.database == "sqlite:///x.db"


def test_config_path_precedence() -> None:
    assert config_path("a.toml", {"SALESBOT_CONFIG": "b.toml"}) == Path("a.toml")
    assert config_path(None, {"SALESBOT_CONFIG": "b.toml"}) == Path("b.toml")
    assert config_path(None, {}) == Path("/etc/salesbot/config.toml")


def test_missing_file_and_broken_toml_give_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml", {})
    broken = tmp_path / "broken.toml"
    broken.write_text("[amocrm\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken, {})


def test_the_example_rubric_is_the_default_one() -> None:
    from salesbot_poller.config import DEFAULT_RUBRIC

    config = load_config(ROOT / "config.example.toml", SECRETS)
    assert config.analysis.rubric == DEFAULT_RUBRIC and config.poller.missed_call_sla_minutes == 15


def test_issue_6_keys_are_validated_with_their_names() -> None:
    raw = {
        "amocrm": {"timezone": "Mars/Olympus"},
        "telegram": {"digest_time": "25:00", "alert_below_score": 120, "routes": {"abc": {"chat_id": "-1"}}},
        "poller": {"missed_call_sla_minutes": 0},
        "analysis": {"prompt_file": "/nonexistent/prompt.txt", "rubric": [{"id": "a", "title": "A"}] * 2},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {}, require_secrets=False)
    text = "\n".join(caught.value.problems)
    for key in (
        "amocrm.timezone: unknown time zone",
        "telegram.digest_time: must be HH:MM",
        "telegram.alert_below_score",
        "telegram.routes.abc",
        "poller.missed_call_sla_minutes",
        "analysis.prompt_file: /nonexistent/prompt.txt: no such file",
        "analysis.rubric: item ids must be unique",
    ):
        assert key in text, text
