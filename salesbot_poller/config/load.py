"""Loading the configuration: the TOML file, the environment, `_file` keys and systemd
credentials, then one validation that reports every problem at once.

Contract:
- `load_config(path, environ)` returns a frozen `Config` or raises `ConfigError` listing
  every problem at once (unknown keys, wrong types, missing or invalid values), each one
  naming its key as `section.key`; `parse_config` does the same for a parsed document.
- Any key can be set by `SALESBOT_<SECTION>_<KEY>`; `SALESBOT_<SECTION>_<KEY>_FILE` names a
  file holding the value (for secrets kept out of the config file and the environment).
- In the TOML, `<key>_file = "/path"` reads the value of `<key>` from that file (setting
  both is a problem).
- Every file is read through `config.files.read_text`: a regular file only, at most 1 MB
  (64 KB for a prompt key); anything else is a problem naming the key, the path and the limit.
- A secret still empty after that is read from the systemd credential
  `$CREDENTIALS_DIRECTORY/<section>_<key>` (`credential_name`, e.g. `openai_api_key`) when
  that file exists: `LoadCredential=` in salesbot.service. Precedence: environment, `_FILE`
  variable, TOML key or `<key>_file`, credential.
- The overrides above apply to every key of every section (`sections()`), and the
  credentials to every `SecretStr` key (`secret_keys`).
- `require_secrets=False` (the `status` command) accepts a config without credentials,
  because `status` only reads the database.
- `config_path` picks the file: the CLI flag, else `SALESBOT_CONFIG`, else the default.
- Every problem about a key says where its value came from (`config.origins`: the file's
  line, the variable, the `_file` path, the credential); `load_with_origins` also returns
  those sources (`check --show-config` prints them).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from salesbot_poller.config.files import FILE_LIMIT, FileRejected, limit_for, read_text
from salesbot_poller.config.model import Config, OpenAIConfig, _is_openai, sections
from salesbot_poller.config.origins import Origins
from salesbot_poller.config.problems import describe
from salesbot_poller.config.values import ReadFile
from salesbot_poller.errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/salesbot/config.toml"
ENV_PREFIX = "SALESBOT_"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


def config_path(cli_value: str | None, environ: Mapping[str, str]) -> Path:
    """The config path: the CLI flag, else `SALESBOT_CONFIG`, else the default."""
    return Path(cli_value or environ.get("SALESBOT_CONFIG") or DEFAULT_CONFIG_PATH)


def _apply_environment(raw: dict[str, Any], environ: Mapping[str, str], problems: list[str], origins: Origins) -> None:
    for section, model in sections().items():
        for key in model.model_fields:
            name = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
            value: str | None = environ.get(name)
            file_name = environ.get(name + "_FILE")
            source = name
            if value is None and file_name:
                try:
                    value = read_text(file_name, limit_for(key)).strip()
                except OSError as exc:
                    problems.append(f"{section}.{key}: cannot read {name}_FILE={file_name}: {exc.strerror}")
                    continue
                except FileRejected as exc:
                    problems.append(f"{section}.{key}: {name}_FILE: {exc}")
                    continue
                source = f"{name}_FILE={file_name}"
            if value is not None:
                origins.override(section, key, source)
                section_raw = raw.setdefault(section, {})
                if isinstance(section_raw, dict):
                    section_raw[key] = value


def credential_name(section: str, key: str) -> str:
    """The systemd credential a secret is read from: `<section>_<key>`, e.g. `openai_api_key`."""
    return f"{section}_{key}"


def secret_keys(model: type[BaseModel]) -> list[str]:
    """The `SecretStr` fields of a section, in order."""
    return [name for name, info in model.model_fields.items() if info.annotation is SecretStr]


def _apply_key_files(raw: dict[str, Any], problems: list[str], read: ReadFile, origins: Origins) -> None:
    """`<key>_file = "/path"` in a section: the value of `<key>` is read from that file."""
    for section, model in sections().items():
        part = raw.get(section)
        if not isinstance(part, dict):
            continue
        for key in model.model_fields:
            file_key = f"{key}_file"
            if file_key in model.model_fields or file_key not in part:
                continue
            file_name = part.pop(file_key)
            where = origins.line_of((section, file_key))
            said = f"{section}.{file_key}" + (f", {where}" if where else "")
            if part.get(key) not in (None, ""):
                problems.append(f"{section}.{file_key}: set either {key} or {file_key}, not both")
            elif not isinstance(file_name, str) or not file_name:
                problems.append(f"{section}.{file_key}: must be the path of a file holding {section}.{key}")
            else:
                try:
                    part[key] = read(file_name, limit_for(key)).strip()
                    origins.override(section, key, f"{file_name}: {said}")
                except OSError as exc:
                    problems.append(f"{section}.{file_key}: cannot read {file_name}: {exc.strerror}")
                except FileRejected as exc:
                    problems.append(f"{section}.{file_key}: {exc}")


def _apply_credentials(raw: dict[str, Any], environ: Mapping[str, str], problems: list[str], origins: Origins) -> None:
    """Fill empty secrets from `$CREDENTIALS_DIRECTORY/<section>_<key>` (systemd credentials)."""
    directory = environ.get(CREDENTIALS_ENV)
    if not directory:
        return
    for section, model in sections().items():
        part = raw.setdefault(section, {})
        if not isinstance(part, dict):
            continue
        for key in secret_keys(model):
            if part.get(key) not in (None, ""):
                continue
            path = Path(directory) / credential_name(section, key)
            try:
                value = read_text(path, FILE_LIMIT).strip()
            except FileNotFoundError:
                continue
            except OSError as exc:
                problems.append(f"{section}.{key}: cannot read credential {path}: {exc.strerror}")
                continue
            except FileRejected as exc:
                problems.append(f"{section}.{key}: credential {exc}")
                continue
            if value:  # the unit's empty SetCredential= fallback means "not given"
                part[key] = value
                origins.override(section, key, f"${CREDENTIALS_ENV}/{credential_name(section, key)}")


def _missing_values(raw: Mapping[str, Any]) -> list[str]:
    """Required values, checked on the raw document so they are reported with type errors."""

    def value(section: str, key: str) -> bool:
        part = raw.get(section)
        found = part.get(key) if isinstance(part, Mapping) else None
        return (found.strip() if isinstance(found, str) else found) not in (None, "")

    problems = []
    if not value("amocrm", "base_url"):
        problems.append("amocrm.base_url: required (your account host, e.g. https://example.amocrm.ru)")
    if not value("amocrm", "long_lived_token"):
        oauth_keys = ["client_id", "client_secret", "redirect_uri"]
        missing = [k for k in oauth_keys if not value("amocrm", k)]
        if len(missing) == len(oauth_keys) and not value("amocrm", "refresh_token"):
            problems.append(
                "amocrm.long_lived_token: required (or OAuth: client_id, client_secret, redirect_uri, then "
                "`salesbot-poller auth --code CODE`)"
            )
        else:
            problems.extend(f"amocrm.{k}: required for OAuth (or set amocrm.long_lived_token)" for k in missing)
    if not value("openai", "api_key"):
        # OpenAI's own API needs a key; a server of your own (speaches, vLLM, llama.cpp, Ollama)
        # usually runs without one. Judged per server: each may have its own URL and key.
        openai_part = raw.get("openai")
        part = openai_part if isinstance(openai_part, Mapping) else {}
        base = part.get("base_url") or OpenAIConfig.model_fields["base_url"].default
        for role in ("transcription", "chat"):
            url = part.get(f"{role}_base_url") or base
            if isinstance(url, str) and _is_openai(url) and not value("openai", f"{role}_api_key"):
                problems.append("openai.api_key: required (or set SALESBOT_OPENAI_API_KEY)")
                break
    if not value("telegram", "bot_token"):
        problems.append("telegram.bot_token: required (or set SALESBOT_TELEGRAM_BOT_TOKEN)")
    if not value("telegram", "chat_id"):
        problems.append("telegram.chat_id: required (the chat the bot posts to, e.g. -1001234567890)")
    return problems


def parse_config(
    raw: dict[str, Any],
    environ: Mapping[str, str],
    *,
    require_secrets: bool = True,
    read_file: ReadFile = read_text,
    origins: Origins | None = None,
) -> Config:
    """Validate a parsed TOML document plus environment overrides; see the module contract.
    `read_file` reads the files the document names (`<key>_file`, `rubric_file`); `origins`
    (the file's lines, when the document came from a file) gets the other sources too."""
    origins = Origins() if origins is None else origins
    problems: list[str] = []
    _apply_key_files(raw, problems, read_file, origins)
    _apply_environment(raw, environ, problems, origins)
    _apply_credentials(raw, environ, problems, origins)
    config: Config | None = None
    try:
        config = Config.model_validate(raw, context={"read_file": read_file})
    except ValidationError as exc:
        problems.extend(describe(e, origins) for e in exc.errors())
    if require_secrets:
        problems.extend(_missing_values(raw))
    if problems or config is None:
        raise ConfigError(problems)
    return config


def load_config(
    path: Path,
    environ: Mapping[str, str] | None = None,
    *,
    require_secrets: bool = True,
    read_file: ReadFile = read_text,
) -> Config:
    """Read `path` and return the validated config; raises `ConfigError` naming every problem.
    `read_file` reads it and the files it names (the `fleet` commands pass one that caps
    sizes and follows no symlink of another user)."""
    return load_with_origins(path, environ, require_secrets=require_secrets, read_file=read_file)[0]


def load_with_origins(
    path: Path,
    environ: Mapping[str, str] | None = None,
    *,
    require_secrets: bool = True,
    read_file: ReadFile = read_text,
) -> tuple[Config, Origins]:
    """`load_config`, and where each value came from (`config.origins`)."""
    environ = os.environ if environ is None else environ
    origins = Origins()
    try:
        text = read_file(str(path), FILE_LIMIT)
        raw = tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file (copy config.example.toml there, or pass --config)"]) from None
    except PermissionError:
        raise ConfigError([f"{path}: permission denied"]) from None
    except OSError as exc:
        raise ConfigError([f"cannot read {path}: {exc.strerror}"]) from None
    except FileRejected as exc:
        raise ConfigError([str(exc)]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    origins.from_toml(path, text)
    config = parse_config(raw, environ, require_secrets=require_secrets, read_file=read_file, origins=origins)
    return config, origins
