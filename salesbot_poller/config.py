"""Configuration: a TOML file, overridden key by key from the environment, validated once.

Contract:
- `load_config(path, environ)` returns a frozen `Config` or raises `ConfigError` listing
  every problem at once (unknown keys, wrong types, missing or invalid values), each one
  naming its key as `section.key`.
- Any key can be set by `SALESBOT_<SECTION>_<KEY>`; `SALESBOT_<SECTION>_<KEY>_FILE` names a
  file holding the value (for secrets kept out of the config file and the environment).
- Secrets are `SecretStr`: their repr is masked, so a logged config never shows them.
- `require_secrets=False` (the `status` command) accepts a config without credentials,
  because `status` only reads the database.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from salesbot_poller.errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/salesbot/config.toml"
ENV_PREFIX = "SALESBOT_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str) -> str:
    value = value.strip().rstrip("/")
    if value and (not value.startswith(("http://", "https://")) or not value.split("://", 1)[1]):
        raise ValueError("must be an http:// or https:// URL")
    return value


# An empty value passes here; whether the key is required is decided in `_missing_values`.
HttpUrl = Annotated[str, AfterValidator(_http_url)]


class AmoCRMConfig(_Section):
    base_url: HttpUrl = ""
    long_lived_token: SecretStr = SecretStr("")
    client_id: str = ""
    client_secret: SecretStr = SecretStr("")
    redirect_uri: str = ""
    refresh_token: SecretStr = SecretStr("")
    access_token: SecretStr = SecretStr("")

    @property
    def uses_oauth(self) -> bool:
        """OAuth is used when no long-lived token is set."""
        return not self.long_lived_token.get_secret_value()


class OpenAIConfig(_Section):
    api_key: SecretStr = SecretStr("")
    base_url: HttpUrl = "https://api.openai.com/v1"
    transcription_model: str = Field("whisper-1", min_length=1)
    analysis_model: str = Field("gpt-4o-mini", min_length=1)
    language: str = "ru"


class TelegramConfig(_Section):
    bot_token: SecretStr = SecretStr("")
    chat_id: str = ""
    api_url: HttpUrl = "https://api.telegram.org"

    @field_validator("chat_id", mode="before")
    @classmethod
    def _chat_id_as_text(cls, value: Any) -> Any:
        # `chat_id = -1001234567890` (a TOML integer) is as natural as the quoted form.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("bot_token")
    @classmethod
    def _check_token(cls, value: SecretStr) -> SecretStr:
        token = value.get_secret_value()
        if token and ":" not in token:
            raise ValueError("must look like 123456:ABC... (the token @BotFather gave)")
        return value


class PollerConfig(_Section):
    interval_seconds: float = Field(60, gt=0)
    initial_lookback_minutes: int = Field(60, ge=0)
    min_duration_seconds: int = Field(10, ge=0)
    retry_delay_seconds: int = Field(60, gt=0)
    max_attempts: int = Field(8, ge=1)  # then the call is `failed` (also after 24 h of trying)


class StorageConfig(_Section):
    database: str = "sqlite:////var/lib/salesbot/salesbot.db"
    audio_dir: Path = Path("/var/lib/salesbot/audio")
    keep_audio: bool = False  # keep recordings after their transcript is stored

    @field_validator("database")
    @classmethod
    def _check_database(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError("must be a peewee database URL, e.g. sqlite:////var/lib/salesbot/salesbot.db")
        return value


class Config(_Section):
    """The whole validated configuration."""

    amocrm: AmoCRMConfig = AmoCRMConfig()
    openai: OpenAIConfig = OpenAIConfig()
    telegram: TelegramConfig = TelegramConfig()
    poller: PollerConfig = PollerConfig()
    storage: StorageConfig = StorageConfig()

    def secrets(self) -> list[str]:
        """Every non-empty secret value, for the log redactor."""
        values = [
            self.amocrm.long_lived_token,
            self.amocrm.client_secret,
            self.amocrm.refresh_token,
            self.amocrm.access_token,
            self.openai.api_key,
            self.telegram.bot_token,
        ]
        return [s.get_secret_value() for s in values if s.get_secret_value()]


_SECTIONS: dict[str, type[_Section]] = {
    "amocrm": AmoCRMConfig,
    "openai": OpenAIConfig,
    "telegram": TelegramConfig,
    "poller": PollerConfig,
    "storage": StorageConfig,
}


def config_path(cli_value: str | None, environ: Mapping[str, str]) -> Path:
    """The config path: the CLI flag, else `SALESBOT_CONFIG`, else the default."""
    return Path(cli_value or environ.get("SALESBOT_CONFIG") or DEFAULT_CONFIG_PATH)


def _apply_environment(raw: dict[str, Any], environ: Mapping[str, str], problems: list[str]) -> None:
    for section, model in _SECTIONS.items():
        for key in model.model_fields:
            name = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
            value: str | None = environ.get(name)
            file_name = environ.get(name + "_FILE")
            if value is None and file_name:
                try:
                    value = Path(file_name).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    problems.append(f"{section}.{key}: cannot read {name}_FILE={file_name}: {exc.strerror}")
                    continue
            if value is not None:
                section_raw = raw.setdefault(section, {})
                if isinstance(section_raw, dict):
                    section_raw[key] = value


def _missing_values(raw: Mapping[str, Any]) -> list[str]:
    """Required values, checked on the raw document so they are reported with type errors."""

    def value(section: str, key: str) -> bool:
        part = raw.get(section)
        return isinstance(part, Mapping) and part.get(key) not in (None, "")

    problems = []
    if not value("amocrm", "base_url"):
        problems.append("amocrm.base_url: required (your account host, e.g. https://example.amocrm.ru)")
    if not value("amocrm", "long_lived_token"):
        oauth_keys = ["client_id", "client_secret", "redirect_uri"]
        missing = [k for k in oauth_keys if not value("amocrm", k)]
        if len(missing) == len(oauth_keys) and not value("amocrm", "refresh_token"):
            problems.append(
                "amocrm.long_lived_token: required (or OAuth: client_id, client_secret, redirect_uri and refresh_token)"
            )
        else:
            problems.extend(f"amocrm.{k}: required for OAuth (or set amocrm.long_lived_token)" for k in missing)
    if not value("openai", "api_key"):
        problems.append("openai.api_key: required (or set SALESBOT_OPENAI_API_KEY)")
    if not value("telegram", "bot_token"):
        problems.append("telegram.bot_token: required (or set SALESBOT_TELEGRAM_BOT_TOKEN)")
    if not value("telegram", "chat_id"):
        problems.append("telegram.chat_id: required (the chat the bot posts to, e.g. -1001234567890)")
    return problems


def _format_error(error: Any) -> str:
    location = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{location}: unknown key"
    # The message only: pydantic's `input` may be a secret and is never shown.
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{location}: {message}"


def parse_config(raw: dict[str, Any], environ: Mapping[str, str], *, require_secrets: bool = True) -> Config:
    """Validate a parsed TOML document plus environment overrides; see the module contract."""
    problems: list[str] = []
    _apply_environment(raw, environ, problems)
    config: Config | None = None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_format_error(e) for e in exc.errors())
    if require_secrets:
        problems.extend(_missing_values(raw))
    if problems or config is None:
        raise ConfigError(problems)
    return config


def load_config(path: Path, environ: Mapping[str, str] | None = None, *, require_secrets: bool = True) -> Config:
    """Read `path` and return the validated config; raises `ConfigError` naming every problem."""
    environ = os.environ if environ is None else environ
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file (copy config.example.toml there, or pass --config)"]) from None
    except PermissionError:
        raise ConfigError([f"{path}: permission denied"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_config(raw, environ, require_secrets=require_secrets)
