"""Config loading: the issue's exact shape, environment overrides, every problem at once."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr

from salesbot_poller.config import (
    AmoCRMConfig,
    AnalysisConfig,
    AudioConfig,
    Config,
    OpenAIConfig,
    PollerConfig,
    StorageConfig,
    TelegramConfig,
    config_path,
    credential_name,
    load_config,
    parse_config,
    safe_url,
    sections,
)
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
                "score_field_id",
                "last_call_field_id",
                "tag_low_score",
                "tag_below_score",
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
                # the prices are commented out: unset, they are OpenAI's list prices of the models
                "daily_budget_usd",
                "max_concurrent_requests",
                "transcription_base_url",
                "transcription_api_key",
                "chat_base_url",
                "chat_api_key",
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
                "max_alerts_per_cycle",
                "delete_on_forget",
                "mask_phones",
                "clip_before_seconds",
                "clip_after_seconds",
                "weekly_report",
                "command_chats",
                "admins",
                "anonymous_admins",
                "managers_may_correct",
                "user_ids",
                "routes",
            ]
        ),
        "poller": sorted(
            [
                "interval_seconds",
                "initial_lookback_minutes",
                "min_duration_seconds",
                "exclude_phones",
                "retry_delay_seconds",
                "missed_call_sla_minutes",
                "log_level",
                "max_attempts",
                "workers",
                "claim_lease_seconds",
                "max_call_minutes",
            ]
        ),
        "storage": sorted(
            [
                "database",
                "audio_dir",
                "max_recording_mb",
                "keep_audio",
                "download_deadline_seconds",
                "allow_private_recording_hosts",
                "clip_days",
                "retention_days",
            ]
        ),
        "analysis": sorted(["prompt_file", "rubric", "redact", "max_transcript_chars", "topics"]),
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


def _walked_sections() -> dict[str, type[BaseModel]]:
    """The sections as the test finds them on its own: the model-typed fields of `Config`."""
    return {
        name: info.annotation
        for name, info in Config.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
    }


def _walked_secret_fields() -> list[tuple[str, str]]:
    return [
        (section, key)
        for section, model in _walked_sections().items()
        for key, info in model.model_fields.items()
        if info.annotation is SecretStr
    ]


def _secret_value(section: str, key: str) -> str:
    return f"123:{section}-{key}"  # with a colon, so telegram.bot_token accepts it too


def _expected_secrets(fields: list[tuple[str, str]]) -> list[str]:
    """Every secret field's value, then the bot token's part after the colon on its own."""
    return [_secret_value(section, key) for section, key in fields] + ["telegram-bot_token"]


def test_secrets_add_the_bot_tokens_secret_half_and_the_database_password() -> None:
    raw = {
        "telegram": {"bot_token": "123456:half-secret"},
        "storage": {"database": "postgresql://u:p%40ss-word@db.example:5432/salesbot?password=q-secret"},
    }
    assert parse_config(raw, {}, require_secrets=False).secrets() == [
        "123456:half-secret",
        "half-secret",
        "p%40ss-word",
        "p@ss-word",
        "q-secret",
    ]


def test_safe_url_hides_the_password_and_keeps_the_rest() -> None:
    assert safe_url("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert safe_url("postgresql://u:p@ss@h/d") == "postgresql://u:***@h/d"
    assert (
        safe_url("postgresql://h/d?user=u&password=s%20t&sslmode=x") == "postgresql://h/d?user=u&password=***&sslmode=x"
    )
    assert safe_url("sqlite:////var/lib/salesbot/salesbot.db") == "sqlite:////var/lib/salesbot/salesbot.db"
    assert safe_url("mysql://u@h/d") == "mysql://u@h/d"


def test_sections_are_every_section_field_of_config() -> None:
    assert sections() == _walked_sections()
    assert sections() == {
        "amocrm": AmoCRMConfig,
        "openai": OpenAIConfig,
        "telegram": TelegramConfig,
        "poller": PollerConfig,
        "storage": StorageConfig,
        "analysis": AnalysisConfig,
        "audio": AudioConfig,
    }
    # In the order of the model; `profiles` and `trackers` are lists of tables (`[[profiles]]`), not sections.
    assert list(sections()) == [name for name in Config.model_fields if name not in ("profiles", "trackers")]


def test_secrets_returns_every_secret_field_of_every_section_when_set() -> None:
    fields = _walked_secret_fields()
    assert fields == [
        ("amocrm", "long_lived_token"),
        ("amocrm", "client_secret"),
        ("amocrm", "refresh_token"),
        ("amocrm", "access_token"),
        ("openai", "api_key"),
        ("openai", "transcription_api_key"),
        ("openai", "chat_api_key"),
        ("telegram", "bot_token"),
    ]
    raw: dict[str, dict[str, object]] = {}
    for section, key in fields:
        raw.setdefault(section, {})[key] = _secret_value(section, key)
    config = parse_config(raw, {}, require_secrets=False)
    assert config.secrets() == _expected_secrets(fields)


def test_secrets_leaves_out_empty_secrets_and_plain_values() -> None:
    raw = {"openai": {"api_key": "sk-only"}, "telegram": {"chat_id": "-100", "bot_token": ""}}
    assert parse_config(raw, {}, require_secrets=False).secrets() == ["sk-only"]
    assert parse_config({}, {}, require_secrets=False).secrets() == []


class _Key(BaseModel):
    value: SecretStr


class _Vault(BaseModel):
    token: SecretStr = SecretStr("")
    keys: tuple[_Key, ...] = ()
    by_name: dict[str, _Key] = {}


class _BiggerConfig(Config):
    vault: _Vault = _Vault()


def test_secrets_finds_a_secret_added_later_wherever_it_is_nested() -> None:
    vault = _Vault(
        token=SecretStr("v-token"),
        keys=(_Key(value=SecretStr("k-in-tuple")),),
        by_name={"x": _Key(value=SecretStr("k-in-dict"))},
    )
    config = _BiggerConfig(openai=OpenAIConfig(api_key=SecretStr("sk-a")), vault=vault)
    assert config.secrets() == ["sk-a", "v-token", "k-in-tuple", "k-in-dict"]


def test_every_secret_is_read_from_its_systemd_credential(tmp_path: Path) -> None:
    fields = _walked_secret_fields()
    for section, key in fields:
        (tmp_path / credential_name(section, key)).write_text(_secret_value(section, key) + "\n")
    config = parse_config({}, {"CREDENTIALS_DIRECTORY": str(tmp_path)}, require_secrets=False)
    assert config.secrets() == _expected_secrets(fields)


# One key per section, set to a non-default value: (key, text as given, value once parsed).
OVERRIDES: dict[str, tuple[str, str, object]] = {
    "amocrm": ("max_rps", "3", 3),
    "openai": ("max_concurrent_requests", "5", 5),
    "telegram": ("alert_below_score", "40", 40),
    "poller": ("workers", "2", 2),
    "storage": ("max_recording_mb", "12", 12),
    "analysis": ("prompt_file", str(ROOT / "config.example.toml"), str(ROOT / "config.example.toml")),
    "audio": ("bitrate_kbps", "24", 24),
}


def test_the_override_table_covers_every_section_of_config() -> None:
    assert sorted(OVERRIDES) == sorted(_walked_sections())


@pytest.mark.parametrize("section", sorted(OVERRIDES))
def test_every_section_accepts_environment_and_file_overrides(section: str, tmp_path: Path) -> None:
    key, text, expected = OVERRIDES[section]
    name = f"SALESBOT_{section.upper()}_{key.upper()}"
    value_file = tmp_path / "value"
    value_file.write_text(text + "\n")
    for raw, environ in (
        ({}, {name: text}),
        ({}, {name + "_FILE": str(value_file)}),
        ({section: {key + "_file": str(value_file)}}, {}),
    ):
        config = parse_config(raw, environ, require_secrets=False)
        assert getattr(getattr(config, section), key) == expected, (raw, environ)


@pytest.mark.parametrize("workers", [0, 17])
def test_poller_workers_out_of_range_is_rejected_by_name(workers: int) -> None:
    for raw, environ in (({"poller": {"workers": workers}}, {}), ({}, {"SALESBOT_POLLER_WORKERS": str(workers)})):
        with pytest.raises(ConfigError) as caught:
            parse_config(raw, environ, require_secrets=False)
        assert [p.split(":")[0] for p in caught.value.problems] == ["poller.workers"], caught.value.problems


def test_poller_workers_defaults_to_4_and_accepts_1_to_16() -> None:
    assert parse_config({}, {}, require_secrets=False).poller.workers == 4
    assert load_config(ROOT / "config.example.toml", SECRETS).poller.workers == 4
    for workers in (1, 16):
        assert parse_config({"poller": {"workers": workers}}, {}, require_secrets=False).poller.workers == workers


@pytest.mark.parametrize("value", [-1, 65])
def test_openai_max_concurrent_requests_out_of_range_is_rejected_by_name(value: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"openai": {"max_concurrent_requests": value}}, {}, require_secrets=False)
    assert [p.split(":")[0] for p in caught.value.problems] == ["openai.max_concurrent_requests"]


def test_openai_concurrency_is_twice_poller_workers_unless_set() -> None:
    def concurrency(raw: dict[str, object]) -> int:
        return parse_config(raw, {}, require_secrets=False).openai_concurrency

    assert concurrency({}) == 8, "4 workers, each may send a stereo call's two channels at once"
    assert concurrency({"poller": {"workers": 2}}) == 4
    assert concurrency({"poller": {"workers": 16}}) == 32
    assert concurrency({"poller": {"workers": 2}, "openai": {"max_concurrent_requests": 0}}) == 4
    assert concurrency({"poller": {"workers": 2}, "openai": {"max_concurrent_requests": 10}}) == 10
    assert concurrency({"openai": {"max_concurrent_requests": 64}}) == 64


@pytest.mark.parametrize("minutes", [0, -5])
def test_poller_max_call_minutes_must_be_positive_and_is_rejected_by_name(minutes: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"poller": {"max_call_minutes": minutes}}, {}, require_secrets=False)
    assert [p.split(":")[0] for p in caught.value.problems] == ["poller.max_call_minutes"], caught.value.problems
    assert parse_config({}, {}, require_secrets=False).poller.max_call_minutes == 180
