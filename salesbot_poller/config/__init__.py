"""Configuration: a TOML file, overridden key by key from the environment, validated once.

Contract:
- `load_config(path, environ)` returns a frozen `Config` or raises `ConfigError` listing
  every problem at once (unknown keys, wrong types, missing or invalid values), each one
  naming its key as `section.key`.
- Any key can be set by `SALESBOT_<SECTION>_<KEY>`; `SALESBOT_<SECTION>_<KEY>_FILE` names a
  file holding the value (for secrets kept out of the config file and the environment).
- In the TOML, `<key>_file = "/path"` reads the value of `<key>` from that file (setting
  both is a problem).
- Every file the config names (the config file, `_file` keys and variables, credentials,
  prompt and rubric files) is read through `read_text`: a regular file only (never a FIFO or
  a device), at most `FILE_LIMIT` (1 MB), `PROMPT_LIMIT` (64 KB) for what goes into every
  request; otherwise a problem naming the key, the path and the limit.
- A secret still empty after that is read from the systemd credential
  `$CREDENTIALS_DIRECTORY/<section>_<key>` (e.g. `openai_api_key`) when that file exists:
  `LoadCredential=` in salesbot.service. Precedence: environment, `_FILE` variable, TOML
  key or `<key>_file`, credential.
- The sections are the fields of `Config` (`sections()`); the overrides above apply to every
  key of every section, and the credentials to every `SecretStr` key (`secret_keys`).
- Secrets are `SecretStr`: their repr is masked, so a logged config never shows them;
  `Config.secrets()` returns all set ones for the log redactor, plus the secret half of the
  Telegram bot token and the password of `storage.database`. A database URL is shown only
  through `safe_url`.
- `require_secrets=False` (the `status` command) accepts a config without credentials,
  because `status` only reads the database.

Split in modules of one concern each, every public name re-exported here: `model` (the
sections' models, the validation of their values, and `Config`), `values` (the section base
and the value checks the sections share), `profiles` (the rubric, `[analysis]` and
`[[profiles]]`), `secrets` (the secrets in a config, and a database URL without its password),
`files` (reading a file the config names, capped), `load` (the TOML file, the
environment, `_file` keys and systemd credentials, the required values), `origins` (where each
value came from: the file's line, the variable, the credential) and `problems` (a validation
error as one line: positions from 1, "did you mean", the value's source).
"""

from salesbot_poller.config.files import FILE_LIMIT, PROMPT_LIMIT, FileRejected, read_text, size_text
from salesbot_poller.config.load import (
    CREDENTIALS_ENV,
    DEFAULT_CONFIG_PATH,
    ENV_PREFIX,
    config_path,
    credential_name,
    load_config,
    load_with_origins,
    parse_config,
    secret_keys,
)
from salesbot_poller.config.model import (
    WEEKDAYS,
    WEEKLY_SPEC,
    AmoCRMConfig,
    AudioConfig,
    Channel,
    Config,
    Endpoint,
    LogLevel,
    MaskMode,
    OpenAIConfig,
    PollerConfig,
    Route,
    StorageConfig,
    TelegramConfig,
    sections,
)
from salesbot_poller.config.origins import Origins, shown
from salesbot_poller.config.profiles import (
    DEFAULT_RUBRIC,
    DIRECTIONS,
    ENTITY_TYPES,
    AnalysisConfig,
    Direction,
    EntityType,
    Profile,
    RubricItem,
    topic_choices,
    unique_item_ids,
)
from salesbot_poller.config.secrets import database_passwords, safe_url
from salesbot_poller.config.trackers import TrackerConfig, TrackerSpeaker
from salesbot_poller.config.values import HttpUrl, existing_file

__all__ = [
    "CREDENTIALS_ENV",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_RUBRIC",
    "DIRECTIONS",
    "ENTITY_TYPES",
    "ENV_PREFIX",
    "FILE_LIMIT",
    "PROMPT_LIMIT",
    "WEEKDAYS",
    "WEEKLY_SPEC",
    "AmoCRMConfig",
    "AnalysisConfig",
    "AudioConfig",
    "Channel",
    "Config",
    "Direction",
    "Endpoint",
    "EntityType",
    "FileRejected",
    "HttpUrl",
    "LogLevel",
    "MaskMode",
    "OpenAIConfig",
    "Origins",
    "PollerConfig",
    "Profile",
    "Route",
    "RubricItem",
    "StorageConfig",
    "TelegramConfig",
    "TrackerConfig",
    "TrackerSpeaker",
    "config_path",
    "credential_name",
    "database_passwords",
    "existing_file",
    "load_config",
    "load_with_origins",
    "parse_config",
    "read_text",
    "safe_url",
    "secret_keys",
    "sections",
    "shown",
    "size_text",
    "topic_choices",
    "unique_item_ids",
]
