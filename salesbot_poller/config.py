"""Configuration: a TOML file, overridden key by key from the environment, validated once.

Contract:
- `load_config(path, environ)` returns a frozen `Config` or raises `ConfigError` listing
  every problem at once (unknown keys, wrong types, missing or invalid values), each one
  naming its key as `section.key`.
- Any key can be set by `SALESBOT_<SECTION>_<KEY>`; `SALESBOT_<SECTION>_<KEY>_FILE` names a
  file holding the value (for secrets kept out of the config file and the environment).
- In the TOML, `<key>_file = "/path"` reads the value of `<key>` from that file (setting
  both is a problem).
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
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from salesbot_poller.domain import DEFAULT_REDACT_KINDS, RedactKind
from salesbot_poller.errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/salesbot/config.toml"
ENV_PREFIX = "SALESBOT_"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str) -> str:
    value = value.strip().rstrip("/")
    if value and (not value.startswith(("http://", "https://")) or not value.split("://", 1)[1]):
        raise ValueError("must be an http:// or https:// URL")
    return value


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
MaskMode = Literal["cards", "all", "none"]  # telegram.mask_phones

# An empty value passes here; whether the key is required is decided in `_missing_values`.
HttpUrl = Annotated[str, AfterValidator(_http_url)]


class AmoCRMConfig(_Section):
    base_url: HttpUrl = Field("", description="The account host, e.g. https://example.amocrm.ru or a kommo.com host.")
    long_lived_token: SecretStr = Field(
        SecretStr(""), description="Long-lived token of a private integration; leave empty to use OAuth."
    )
    client_id: str = Field("", description="OAuth 2.0 integration id (when no long-lived token is set).")
    client_secret: SecretStr = Field(SecretStr(""), description="OAuth 2.0 integration secret.")
    redirect_uri: str = Field("", description="OAuth 2.0 redirect URI registered for the integration.")
    refresh_token: SecretStr = Field(
        SecretStr(""), description="The first OAuth refresh token; rotated tokens are kept in the database."
    )
    access_token: SecretStr = Field(SecretStr(""), description="Optional current OAuth access token.")
    # The account's time zone (IANA name): message times, the digest hour, task due dates.
    # Empty: the server's local zone. (API v4 `/account` does not reliably say it.)
    timezone: str = ""
    write_back: bool = False  # a note with the analysis on the call's lead/contact
    create_tasks: bool = False  # with write_back: a task for the agreed next step
    # Scores in amoCRM fields (opt-in): written on the call's lead (calls on contacts and
    # companies have none), batched, exactly once per call; see pipeline/lead_fields.py.
    score_field_id: int = Field(
        0, ge=0, description="A numeric custom field of the lead: the score of its last call (0: not written)."
    )
    last_call_field_id: int = Field(
        0,
        ge=0,
        description="A date or date-and-time custom field of the lead: when its last call was (0: not written).",
    )
    tag_low_score: str = Field(
        "",
        max_length=100,
        description='A tag added to the lead when its last call scored below tag_below_score, e.g. "звонок<50" '
        "(empty: none). The lead's other tags are kept; the tag is never removed by the bot.",
    )
    tag_below_score: int = Field(
        50, ge=1, le=100, description="The score under which tag_low_score is added to the lead."
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r} (use an IANA name, e.g. Europe/Moscow)") from None
        return value

    max_rps: int = Field(
        7, ge=1, le=7, description="At most this many amoCRM requests in any rolling second (amoCRM blocks above 7)."
    )

    @property
    def writes_lead_fields(self) -> bool:
        """Whether the score, the last call's date or the low-score tag go to the lead."""
        return bool(self.score_field_id or self.last_call_field_id or self.tag_low_score.strip())

    @property
    def uses_oauth(self) -> bool:
        """OAuth is used when no long-lived token is set."""
        return not self.long_lived_token.get_secret_value()


class OpenAIConfig(_Section):
    api_key: SecretStr = Field(
        SecretStr(""), description="Secret key of an OpenAI (or compatible) account; your own server may need none."
    )
    base_url: HttpUrl = Field(
        "https://api.openai.com/v1", description="Any OpenAI-compatible server (Groq, a local one, ...)."
    )
    transcription_model: str = Field(
        "whisper-1", min_length=1, description="Speech-to-text model (whisper-1, gpt-4o-transcribe, ...)."
    )
    analysis_model: str = Field(
        "gpt-4o-mini", min_length=1, description="Chat model that scores the call (structured output)."
    )
    language: str = Field("ru", description='Language of the calls (ISO 639-1); "" lets the model guess.')
    # Mono recordings go to this diarizing model when set (e.g. gpt-4o-transcribe-diarize).
    diarize_model: str = ""
    vocabulary_prompt: str = ""  # company and product names, for models that accept a prompt
    audio_price_per_minute_usd: float = Field(0.006, ge=0)
    input_token_price_per_million_usd: float = Field(0.0, ge=0)
    output_token_price_per_million_usd: float = Field(0.0, ge=0)
    daily_budget_usd: float = Field(50.0, ge=0)  # 0 = no budget
    max_concurrent_requests: int = Field(
        0, ge=0, le=64, description="OpenAI requests in flight at once, all workers together; 0: poller.workers."
    )
    # Speech-to-text and the analysis may each have their own server (e.g. two local ones).
    transcription_base_url: HttpUrl = Field(
        "", description='Speech-to-text server, e.g. a local "http://127.0.0.1:8000/v1"; "": openai.base_url.'
    )
    transcription_api_key: SecretStr = Field(
        SecretStr(""), description='Key of the speech-to-text server; "": openai.api_key (a local one may need none).'
    )
    chat_base_url: HttpUrl = Field(
        "", description='Chat server for the analysis, e.g. a local "http://127.0.0.1:8080/v1"; "": openai.base_url.'
    )
    chat_api_key: SecretStr = Field(
        SecretStr(""), description='Key of the chat server; "": openai.api_key (a local server may need none).'
    )

    @property
    def transcription(self) -> Endpoint:
        """Where speech-to-text requests go, with which key."""
        key = self.transcription_api_key if self.transcription_api_key.get_secret_value() else self.api_key
        return Endpoint(self.transcription_base_url or self.base_url, key)

    @property
    def chat(self) -> Endpoint:
        """Where the analysis (chat) requests go, with which key."""
        key = self.chat_api_key if self.chat_api_key.get_secret_value() else self.api_key
        return Endpoint(self.chat_base_url or self.base_url, key)


def _is_openai(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "openai.com" or host.endswith(".openai.com")


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible server as the clients see it: its base URL and key ("" = none)."""

    base_url: str
    api_key: SecretStr

    @property
    def host(self) -> str:
        """`host[:port]` for messages: never a path, query or credentials."""
        parts = urlsplit(self.base_url)
        return f"{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}"

    @property
    def needs_key(self) -> bool:
        """OpenAI's own API needs a key; any other server may run without one."""
        return _is_openai(self.base_url)


Channel = Literal["left", "right"]


class AudioConfig(_Section):
    """How recordings are prepared for upload, and which stereo channel is the manager."""

    manager_channel: Channel = "left"
    manager_channel_by_direction: dict[Literal["in", "out"], Channel] = {}
    # Keys are the note's `params.source` (the telephony widget), optionally with ":in"/":out".
    manager_channel_by_source: dict[str, Channel] = {}
    upload_format: Literal["ogg", "mp3"] = "ogg"
    bitrate_kbps: int = Field(12, ge=6, le=64)
    chunk_overlap_seconds: float = Field(2.0, ge=0, le=30)


def _chat_id_text(value: Any) -> Any:
    # `chat_id = -1001234567890` (a TOML integer) is as natural as the quoted form.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _comma_list(value: Any) -> Any:
    # The environment gives a string: SALESBOT_ANALYSIS_REDACT="phone,email" ("" = none).
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _id_list(value: Any) -> Any:
    # Chat ids as TOML integers or strings, or "a,b" from the environment: kept as text.
    value = _comma_list(value)
    if isinstance(value, list):
        return [_chat_id_text(item) for item in value]
    return value


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKLY_SPEC = re.compile(rf"({'|'.join(WEEKDAYS)})\s+(\d{{2}}:\d{{2}})")


class Route(_Section):
    """Where the calls of one amoCRM user go: a chat and, in a forum, a topic."""

    chat_id: Annotated[str, BeforeValidator(_chat_id_text)] = Field(min_length=1)
    message_thread_id: int | None = None


class TelegramConfig(_Section):
    bot_token: SecretStr = Field(SecretStr(""), description="Bot token from @BotFather, like 123456:ABC...")
    chat_id: str = Field("", description='Chat the bot posts to, e.g. "-1001234567890".')
    api_url: HttpUrl = Field("https://api.telegram.org", description="Bot API server (or a self-hosted one).")
    attach_transcript: bool = False
    alert_below_score: int = Field(0, ge=0, le=100)  # 0: off (no score is below 0)
    alert_chat_id: Annotated[str, BeforeValidator(_chat_id_text)] = ""  # empty: telegram.chat_id
    alert_message_thread_id: int = Field(0, ge=0)  # 0: no forum topic
    routes: dict[int, Route] = Field(default_factory=dict)  # amoCRM user id -> chat (and topic)
    digest_time: str = ""  # "HH:MM" in amocrm.timezone; empty: no digest
    max_alerts_per_cycle: int = Field(30, ge=1)  # more missed calls due at once: one summary message
    delete_on_forget: bool = Field(
        False,
        description=(
            "true: `forget --phone` also deletes the bot's own messages about those calls"
            " (Telegram allows it for 48 hours)."
        ),
    )
    mask_phones: MaskMode = "cards"  # which messages show numbers masked: see `messages.masked`
    # The weekly report, and the bot's commands for the head of sales.
    weekly_report: str = ""  # "mon 09:00": day and time in amocrm.timezone; empty: no weekly report
    command_chats: Annotated[list[str], BeforeValidator(_id_list)] = Field(default_factory=list)
    admins: Annotated[list[int], BeforeValidator(_comma_list)] = Field(default_factory=list)

    @field_validator("weekly_report")
    @classmethod
    def _day_and_time(cls, value: str) -> str:
        if value and WEEKLY_SPEC.fullmatch(value.strip().lower()) is None:
            raise ValueError(f'must be a day and HH:MM like "mon 09:00", got {value!r}')
        if value:
            try:
                time.fromisoformat(value.split()[1])
            except ValueError:
                raise ValueError(f'must be a day and HH:MM like "mon 09:00", got {value!r}') from None
        return value.strip().lower()

    @field_validator("digest_time")
    @classmethod
    def _hh_mm(cls, value: str) -> str:
        if value:
            try:
                time.fromisoformat(value)
            except ValueError:
                raise ValueError(f"must be HH:MM, got {value!r}") from None
        return value

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
    interval_seconds: float = Field(60, gt=0, description="Seconds between poll cycles.")
    initial_lookback_minutes: int = Field(60, ge=0, description="How far back the very first cycle looks.")
    min_duration_seconds: int = Field(10, ge=0, description="Answered calls shorter than this are skipped.")
    exclude_phones: list[str] = Field(
        default_factory=list,
        description=(
            "Numbers never analysed nor alerted (internal lines, the office), compared by their last 10 digits."
        ),
    )
    retry_delay_seconds: int = Field(
        60, gt=0, description="First delay of a failing call's backoff (doubles, max 2 h; gives up after 24 h)."
    )
    log_level: LogLevel = Field("INFO", description="Least severe log lines written; --log-level overrides it.")
    missed_call_sla_minutes: int = Field(
        15, ge=1, description="No callback to a missed number within this many minutes: one escalation."
    )
    max_attempts: int = Field(
        8, ge=1, description="A call failing this many times is marked failed (so is one failing for 24 h)."
    )
    workers: int = Field(
        4,
        ge=1,
        le=16,
        description="Answered calls worked at once (download, transcription, analysis); 1: one at a time.",
    )


class StorageConfig(_Section):
    database: str = Field(
        "sqlite:////var/lib/salesbot/salesbot.db",
        description="sqlite:////PATH, or postgresql://USER:PASSWORD@HOST:PORT/DATABASE (the `postgres` extra).",
    )
    audio_dir: Path = Field(
        Path("/var/lib/salesbot/audio"), description="Recordings wait here until transcribed, then are deleted."
    )
    max_recording_mb: int = Field(300, gt=0)
    keep_audio: bool = Field(False, description="true keeps each recording after its transcript is stored.")
    download_deadline_seconds: float = Field(
        600, gt=0, description="A recording download taking longer than this is cut (and tried again later)."
    )
    allow_private_recording_hosts: bool = Field(
        False,
        description=(
            "true: recording links may point at private, loopback or link-local addresses "
            "(a PBX on the office network); false: public addresses only."
        ),
    )

    retention_days: int = Field(
        180,
        ge=0,
        description=(
            "Calls older than this many days lose their personal data (transcript, number, recording link,"
            " quotes, message texts); scores and durations stay. 0 keeps everything."
        ),
    )

    @field_validator("database")
    @classmethod
    def _check_database(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError("must be a peewee database URL, e.g. sqlite:////var/lib/salesbot/salesbot.db")
        return value


def existing_file(value: str) -> str:
    """A file setting: "" (none) or the path of a file that exists."""
    if value and not Path(value).is_file():
        raise ValueError(f"{value}: no such file")
    return value


def unique_item_ids(items: tuple[RubricItem, ...]) -> tuple[RubricItem, ...]:
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"item ids must be unique, got {ids}")
    return items


class RubricItem(_Section):
    """One item of the sales-script rubric."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)
    title: str = Field(min_length=1, max_length=120)
    done_when: str = ""  # what counts as done, told to the model
    weight: float = Field(1.0, gt=0)


DEFAULT_RUBRIC = (
    RubricItem(id="greeting", title="Приветствие и представление", done_when="поздоровался, назвал себя и компанию"),
    RubricItem(
        id="needs", title="Выявление потребностей", done_when="задал открытые вопросы о задаче, сроках, бюджете"
    ),
    RubricItem(
        id="presentation", title="Презентация предложения", done_when="предложил решение под названные потребности"
    ),
    RubricItem(id="objections", title="Работа с возражениями", done_when="выслушал, уточнил и ответил по существу"),
    RubricItem(id="next_step", title="Договорённость о следующем шаге", done_when="назван конкретный шаг и срок"),
    RubricItem(id="closing", title="Завершение", done_when="подвёл итог и вежливо попрощался"),
)


class AnalysisConfig(_Section):
    rubric: tuple[RubricItem, ...] = Field(
        DEFAULT_RUBRIC,
        description=(
            "The sales-script items, one `[[analysis.rubric]]` table each: `id`, `title`, `done_when`, `weight`;"
            " default: the six items spelled out in config.example.toml."
        ),
    )
    prompt_file: str = Field(
        "", description='A file replacing the built-in system prompt; "{rubric}" in it becomes the rubric list.'
    )
    max_transcript_chars: int = Field(
        100_000,
        ge=2_000,
        description=(
            "A transcript longer than this is condensed part by part first and scored on the condensed text"
            " (the card says so). The default, about 30,000 tokens of Russian, suits 128k-context models;"
            " for a local model with an 8k context use about 12000."
        ),
    )
    redact: Annotated[list[RedactKind], BeforeValidator(_comma_list)] = Field(
        default_factory=lambda: list(DEFAULT_REDACT_KINDS),
        description=(
            "Personal data replaced by a placeholder in what the chat model is sent, and in the quotes kept"
            " from its answer: any of phone, email, card, passport ([] = none)."
        ),
    )

    @field_validator("redact")
    @classmethod
    def _once_each(cls, kinds: list[RedactKind]) -> list[RedactKind]:
        return list(dict.fromkeys(kinds))

    @field_validator("rubric")
    @classmethod
    def _unique_ids(cls, items: tuple[RubricItem, ...]) -> tuple[RubricItem, ...]:
        if not items:
            raise ValueError("needs at least one item")
        return unique_item_ids(items)

    @field_validator("prompt_file")
    @classmethod
    def _readable(cls, value: str) -> str:
        return existing_file(value)


EntityType = Literal["leads", "contacts", "companies"]
Direction = Literal["in", "out"]
ENTITY_TYPES: tuple[EntityType, ...] = ("leads", "contacts", "companies")
DIRECTIONS: tuple[Direction, ...] = ("in", "out")


def _rubric_file(path: str) -> tuple[RubricItem, ...]:
    """The `[[rubric]]` tables of a TOML file (`profiles[].rubric_file`)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    items = data.get("rubric")
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: needs [[rubric]] tables (id, title, done_when, weight)")
    return tuple(RubricItem.model_validate(item) for item in items)


class Profile(_Section):
    """Which calls are analysed, against which script, and where the card goes.

    A call gets the first profile that matches it (`pipeline.profiles.match`); with none
    configured, the top-level `[analysis]` and `[telegram]` settings are the only profile.
    An empty list matches anything; a setting left out is the top-level one."""

    name: str = Field(min_length=1, max_length=60)
    entities: list[EntityType] = Field(default_factory=lambda: list(ENTITY_TYPES))
    pipelines: list[int] = Field(default_factory=list)
    statuses: list[int] = Field(default_factory=list)
    users: list[int] = Field(default_factory=list)
    groups: list[int] = Field(default_factory=list)
    directions: list[Direction] = Field(default_factory=lambda: list(DIRECTIONS))
    min_duration_seconds: int | None = Field(None, ge=0)  # None: poller.min_duration_seconds
    max_duration_seconds: int = Field(0, ge=0)  # 0: no upper bound
    sources: list[str] = Field(default_factory=list)
    missed_calls: bool = True
    prompt_file: str = ""  # "": analysis.prompt_file
    rubric: tuple[RubricItem, ...] = ()  # (): analysis.rubric
    rubric_file: str = ""
    chat_id: Annotated[str, BeforeValidator(_chat_id_text)] = ""  # "": telegram.routes / chat_id
    message_thread_id: int | None = None
    alert_below_score: int | None = Field(None, ge=0, le=100)  # None: telegram.alert_below_score

    @field_validator("prompt_file")
    @classmethod
    def _readable(cls, value: str) -> str:
        return existing_file(value)

    @model_validator(mode="after")
    def _one_rubric(self) -> Profile:
        if self.rubric and self.rubric_file:
            raise ValueError("set either rubric or rubric_file, not both")
        if self.rubric_file:
            object.__setattr__(self, "rubric", _rubric_file(self.rubric_file))
        unique_item_ids(self.rubric)
        return self

    @property
    def needs_lead(self) -> bool:
        """Whether matching needs the lead's pipeline and status."""
        return bool(self.pipelines or self.statuses)


class Config(_Section):
    """The whole validated configuration."""

    amocrm: AmoCRMConfig = AmoCRMConfig()
    openai: OpenAIConfig = OpenAIConfig()
    telegram: TelegramConfig = TelegramConfig()
    poller: PollerConfig = PollerConfig()
    storage: StorageConfig = StorageConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    audio: AudioConfig = AudioConfig()
    profiles: list[Profile] = Field(default_factory=list)

    @field_validator("profiles")
    @classmethod
    def _unique_names(cls, profiles: list[Profile]) -> list[Profile]:
        names = [p.name for p in profiles]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"profile names must be unique: {', '.join(doubled)} more than once")
        return profiles

    @property
    def openai_concurrency(self) -> int:
        """`openai.max_concurrent_requests`, or `poller.workers` when it is 0."""
        return self.openai.max_concurrent_requests or self.poller.workers

    def secrets(self) -> list[str]:
        """Every non-empty `SecretStr` value in the config, in field order, for the log redactor.

        Found by walking the model (nested models, mappings and sequences included), so a
        secret added to any section later is redacted without being listed here.
        """
        found = _secret_values(self)
        # Telegram errors and URLs may carry the token's part after the colon on its own.
        _, _, bot_secret = self.telegram.bot_token.get_secret_value().partition(":")
        extras = [bot_secret, *database_passwords(self.storage.database)]
        return found + [extra for extra in dict.fromkeys(extras) if extra and extra not in found]


def database_passwords(url: str) -> list[str]:
    """The passwords in a database URL: `user:PASSWORD@` and a `password=` query parameter,
    each as written and percent-decoded (the driver, and so its errors, see the decoded one)."""
    try:
        parts = urlsplit(url)
        query = [pair.partition("=") for pair in parts.query.split("&")]
        written = [parts.password or "", *(value for key, _, value in query if unquote(key) == "password")]
    except ValueError:  # a malformed URL: no password is read out of it
        return []
    found: list[str] = []
    for value in written:
        for form in (value, unquote(value)):
            if form and form not in found:
                found.append(form)
    return found


def safe_url(url: str) -> str:
    """`url` with its password replaced by `***`, for printing: every place that shows
    `storage.database` shows it through this."""
    if not database_passwords(url):
        return url
    scheme, _, rest = url.partition("://")
    location, query_mark, query = rest.partition("?")
    userinfo, at, host = location.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if colon and password:
        location = f"{user}:***{at}{host}"
    query = re.sub(r"(^|&)password=[^&]*", r"\1password=***", query)
    return f"{scheme}://{location}{query_mark}{query}"


def _secret_values(value: Any) -> list[str]:
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        return [secret] if secret else []
    if isinstance(value, BaseModel):
        children: list[Any] = [getattr(value, name) for name in type(value).model_fields]
    elif isinstance(value, Mapping):
        children = list(value.values())
    elif isinstance(value, list | tuple):
        children = list(value)
    else:
        return []
    return [secret for child in children for secret in _secret_values(child)]


def sections() -> dict[str, type[BaseModel]]:
    """The sections of `Config`, in order: table name -> its model (every field typed as a section).

    Environment overrides, `<key>_file` indirection and systemd credentials walk this, so a
    section added to `Config` gets all three.
    """
    found: dict[str, type[BaseModel]] = {}
    for name, info in Config.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, _Section):
            found[name] = info.annotation
    return found


def config_path(cli_value: str | None, environ: Mapping[str, str]) -> Path:
    """The config path: the CLI flag, else `SALESBOT_CONFIG`, else the default."""
    return Path(cli_value or environ.get("SALESBOT_CONFIG") or DEFAULT_CONFIG_PATH)


def _apply_environment(raw: dict[str, Any], environ: Mapping[str, str], problems: list[str]) -> None:
    for section, model in sections().items():
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


def credential_name(section: str, key: str) -> str:
    """The systemd credential a secret is read from: `<section>_<key>`, e.g. `openai_api_key`."""
    return f"{section}_{key}"


def secret_keys(model: type[BaseModel]) -> list[str]:
    """The `SecretStr` fields of a section, in order."""
    return [name for name, info in model.model_fields.items() if info.annotation is SecretStr]


def _apply_key_files(raw: dict[str, Any], problems: list[str]) -> None:
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
            if part.get(key) not in (None, ""):
                problems.append(f"{section}.{file_key}: set either {key} or {file_key}, not both")
            elif not isinstance(file_name, str) or not file_name:
                problems.append(f"{section}.{file_key}: must be the path of a file holding {section}.{key}")
            else:
                try:
                    part[key] = Path(file_name).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    problems.append(f"{section}.{file_key}: cannot read {file_name}: {exc.strerror}")


def _apply_credentials(raw: dict[str, Any], environ: Mapping[str, str], problems: list[str]) -> None:
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
                value = path.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                continue
            except OSError as exc:
                problems.append(f"{section}.{key}: cannot read credential {path}: {exc.strerror}")
                continue
            if value:  # the unit's empty SetCredential= fallback means "not given"
                part[key] = value


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


def _format_error(error: Any) -> str:
    loc = list(error["loc"])
    if len(loc) > 1 and loc[0] == "profiles" and isinstance(loc[1], int):  # [[profiles]] as counted: from 1
        loc[:2] = [f"profiles[{loc[1] + 1}]"]
    location = ".".join(str(part) for part in loc)
    if error["type"] == "extra_forbidden":
        return f"{location}: unknown key"
    # The message only: pydantic's `input` may be a secret and is never shown.
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{location}: {message}"


def parse_config(raw: dict[str, Any], environ: Mapping[str, str], *, require_secrets: bool = True) -> Config:
    """Validate a parsed TOML document plus environment overrides; see the module contract."""
    problems: list[str] = []
    _apply_key_files(raw, problems)
    _apply_environment(raw, environ, problems)
    _apply_credentials(raw, environ, problems)
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
