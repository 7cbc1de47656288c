"""The configuration's model: one frozen pydantic model per TOML table, and `Config`, the whole.

Contract:
- A value is checked where it is declared (bounds, URLs, time zones, `HH:MM` and weekly
  times, the bot token's shape, the database URL); the checks shared by several sections
  are in `config.values`, the rubric, `[analysis]` and `[[profiles]]` in `config.profiles`.
- `Config` is frozen and validated once; its sections are its fields typed as a section
  (`sections()`), which loading (`config.load`) walks for environment overrides,
  `<key>_file` indirection and systemd credentials, so a section added here gets all three.
- `[[profiles]]` names are unique; `[[trackers]]` names too (`config.trackers`), and a profile's
  `trackers` names only configured ones; each such problem is one error at its own key.
- `Config.secrets()` returns every set secret for the log redactor (`config.secrets`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from salesbot_poller.config.profiles import AnalysisConfig, Profile
from salesbot_poller.config.secrets import _secret_values, database_passwords
from salesbot_poller.config.trackers import TrackerConfig, too_many_trackers, tracker_problems
from salesbot_poller.config.values import ChatId, HttpUrl, Secret, _comma_list, _id_list, _Section

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
MaskMode = Literal["cards", "all", "none"]  # telegram.mask_phones


def _zone(value: str) -> str:
    """`value` when it is empty or an IANA zone name; a ValueError naming it otherwise."""
    if value:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name, e.g. Europe/Moscow)") from None
    return value


class AmoCRMConfig(_Section):
    base_url: HttpUrl = Field("", description="The account host, e.g. https://example.amocrm.ru or a kommo.com host.")
    long_lived_token: Secret = Field(
        SecretStr(""), description="Long-lived token of a private integration; leave empty to use OAuth."
    )
    client_id: str = Field("", description="OAuth 2.0 integration id (when no long-lived token is set).")
    client_secret: Secret = Field(SecretStr(""), description="OAuth 2.0 integration secret.")
    redirect_uri: str = Field("", description="OAuth 2.0 redirect URI registered for the integration.")
    refresh_token: Secret = Field(
        SecretStr(""), description="The first OAuth refresh token; rotated tokens are kept in the database."
    )
    access_token: Secret = Field(SecretStr(""), description="Optional current OAuth access token.")
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
        return _zone(value)

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
    api_key: Secret = Field(
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
    # Unset (None): the built-in OpenAI price of the model (`pipeline.prices`); 0: free.
    audio_price_per_minute_usd: float | None = Field(
        None,
        ge=0,
        description="USD per audio minute sent to speech-to-text; unset: the built-in OpenAI price of the model"
        " (whisper-1, gpt-4o-transcribe, gpt-4o-mini-transcribe); 0: free (a server of your own).",
    )
    input_token_price_per_million_usd: float | None = Field(
        None,
        ge=0,
        description="USD per million tokens sent to the chat model; unset: the built-in OpenAI price of the"
        " model (gpt-4o-mini, gpt-4o, gpt-4.1, -mini, -nano); 0: free.",
    )
    output_token_price_per_million_usd: float | None = Field(
        None, ge=0, description="USD per million tokens the chat model answers; unset: its built-in price; 0: free."
    )
    daily_budget_usd: float = Field(50.0, ge=0)  # 0 = no budget
    max_concurrent_requests: int = Field(
        0,
        ge=0,
        le=64,
        description="OpenAI requests in flight at once, all workers together; 0: 2 x poller.workers (a stereo"
        " call's two channels are sent at once).",
    )
    # Speech-to-text and the analysis may each have their own server (e.g. two local ones).
    transcription_base_url: HttpUrl = Field(
        "", description='Speech-to-text server, e.g. a local "http://127.0.0.1:8000/v1"; "": openai.base_url.'
    )
    transcription_api_key: Secret = Field(
        SecretStr(""), description='Key of the speech-to-text server; "": openai.api_key (a local one may need none).'
    )
    chat_base_url: HttpUrl = Field(
        "", description='Chat server for the analysis, e.g. a local "http://127.0.0.1:8080/v1"; "": openai.base_url.'
    )
    chat_api_key: Secret = Field(
        SecretStr(""), description='Key of the chat server; "": openai.api_key (a local server may need none).'
    )

    @property
    def transcription(self) -> Endpoint:
        """Where speech-to-text requests go, with which key (and the settings that say so)."""
        return self._endpoint("transcription")

    @property
    def chat(self) -> Endpoint:
        """Where the analysis (chat) requests go, with which key (and the settings that say so)."""
        return self._endpoint("chat")

    def _endpoint(self, name: Literal["transcription", "chat"]) -> Endpoint:
        own_url: str = getattr(self, f"{name}_base_url")
        own_key: SecretStr = getattr(self, f"{name}_api_key")
        url_setting = f"openai.{name}_base_url" if own_url else "openai.base_url"
        key_setting = f"openai.{name}_api_key" if own_key.get_secret_value() else "openai.api_key"
        key = own_key if own_key.get_secret_value() else self.api_key
        return Endpoint(own_url or self.base_url, key, url_setting, key_setting)


def _is_openai(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "openai.com" or host.endswith(".openai.com")


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible server as the clients see it: its base URL and key ("" = none),
    and the settings they come from, for messages (not part of its identity: speech-to-text
    and chat on one server are one endpoint)."""

    base_url: str
    api_key: SecretStr
    url_setting: str = field(default="openai.base_url", compare=False)
    key_setting: str = field(default="openai.api_key", compare=False)

    @property
    def host(self) -> str:
        """`host[:port]` for messages: never a path, query or credentials."""
        parts = urlsplit(self.base_url)
        return f"{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}"

    @property
    def shown_url(self) -> str:
        """The base URL for messages: scheme, host, port and path; never credentials or a query."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{self.host}{parts.path.rstrip('/')}"

    @property
    def needs_key(self) -> bool:
        """OpenAI's own API needs a key; any other server may run without one."""
        return _is_openai(self.base_url)


Channel = Literal["left", "right"]
BOT_TOKEN = re.compile(r"\d+:[A-Za-z0-9_-]+")
POSTGRES_SCHEMES = ("postgres://", "postgresql://")


class AudioConfig(_Section):
    """How recordings are prepared for upload, and which stereo channel is the manager."""

    manager_channel: Channel = "left"
    manager_channel_by_direction: dict[Literal["in", "out"], Channel] = Field(default_factory=dict)
    # Keys are the note's `params.source` (the telephony widget), optionally with ":in"/":out".
    manager_channel_by_source: dict[str, Channel] = Field(default_factory=dict)
    upload_format: Literal["ogg", "mp3"] = "ogg"
    bitrate_kbps: int = Field(12, ge=6, le=64)
    chunk_overlap_seconds: float = Field(2.0, ge=0, le=30)


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKLY_SPEC = re.compile(rf"({'|'.join(WEEKDAYS)})\s+(\d{{2}}:\d{{2}})")


class Route(_Section):
    """Where the calls of one amoCRM user go: a chat and, in a forum, a topic."""

    chat_id: ChatId = Field(min_length=1)
    message_thread_id: int | None = None


class TelegramConfig(_Section):
    bot_token: Secret = Field(SecretStr(""), description="Bot token from @BotFather, like 123456:ABC...")
    chat_id: ChatId = Field("", description='Chat the bot posts to, e.g. "-1001234567890".')
    api_url: HttpUrl = Field("https://api.telegram.org", description="Bot API server (or a self-hosted one).")
    attach_transcript: bool = False
    alert_below_score: int = Field(0, ge=0, le=100)  # 0: off (no score is below 0)
    alert_chat_id: ChatId = ""  # empty: telegram.chat_id
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
    clip_before_seconds: float = Field(
        5, ge=0, le=600, description="A quote's audio clip starts this many seconds before the quote."
    )
    clip_after_seconds: float = Field(
        20, gt=0, le=600, description="A quote's audio clip ends this many seconds after the quote starts."
    )
    mask_phones: MaskMode = "cards"  # which messages show numbers masked: see `messages.masked`
    # The weekly report, and the bot's commands for the head of sales.
    weekly_report: str = ""  # "mon 09:00": day and time in amocrm.timezone; empty: no weekly report
    command_chats: Annotated[list[ChatId], BeforeValidator(_id_list)] = Field(default_factory=list)
    admins: Annotated[list[int], BeforeValidator(_comma_list)] = Field(default_factory=list)
    anonymous_admins: bool = Field(
        False,
        description=(
            "true: also answer a command an admin of a command chat sent anonymously (as the group"
            " itself; Telegram does not say who); never one sent on behalf of another chat or channel."
        ),
    )
    managers_may_correct: bool = Field(
        False,
        description=(
            "true: besides telegram.admins, the manager a call belongs to (mapped by telegram.user_ids) may"
            " press its card's buttons: correct its verdicts and hear its quotes."
        ),
    )
    user_ids: dict[int, int] = Field(
        default_factory=dict,
        description=(
            'amoCRM user id -> that person\'s Telegram user id, e.g. { "501" = 123456789 }: who a manager is'
            " in Telegram (telegram.managers_may_correct)."
        ),
    )

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

    @field_validator("bot_token")
    @classmethod
    def _check_token(cls, value: SecretStr) -> SecretStr:
        token = value.get_secret_value()
        if token and BOT_TOKEN.fullmatch(token) is None:
            if token[:3].lower() == "bot" and BOT_TOKEN.fullmatch(token[3:]):
                raise ValueError("remove the leading 'bot': the token is what @BotFather gave, like 123456:ABC…")
            raise ValueError(
                "must look like 123456:ABC… (digits, a colon, then letters, digits, - and _: the token @BotFather gave)"
            )
        return value


class PollerConfig(_Section):
    interval_seconds: float = Field(60, gt=0, description="Seconds between poll cycles.")
    initial_lookback_minutes: int = Field(60, ge=0, description="How far back the very first cycle looks.")
    min_duration_seconds: int = Field(10, ge=0, description="Answered calls shorter than this are skipped.")
    exclude_phones: list[str] = Field(
        default_factory=list,
        description=(
            "Numbers never analysed nor alerted (internal lines, the office), in any form:"
            " `8 (916) 123-45-67` also excludes `79161234567`, `+7 916…`, `9161234567`."
        ),
    )
    retry_delay_seconds: int = Field(
        60, gt=0, description="First delay of a failing call's backoff (doubles, max 2 h; gives up after 24 h)."
    )
    log_level: LogLevel = Field("INFO", description="Least severe log lines written; --log-level overrides it.")
    timezone: str = Field(
        "",
        description=(
            "The zone every command, message and report shows times and counts days in: another name for"
            " amocrm.timezone (set either; both set must agree)."
        ),
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return _zone(value)

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
    claim_lease_seconds: int = Field(
        1800,
        ge=60,
        description=(
            "A claim on a call (or on a message being sent) not renewed for this long is taken back by"
            " another worker: its holder died or lost the database. Longer than any one stage with its"
            " retries (a worker renews its claim between stages)."
        ),
    )
    max_call_minutes: int = Field(
        180,
        ge=1,
        description=(
            "Only the first this-many minutes of a recording are transcribed, whatever its note "
            "claims (the card says it was cut); at least 1, there is no unlimited value."
        ),
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

    clip_days: int = Field(
        14,
        ge=0,
        description=(
            "Days the audio a call was transcribed from is kept in audio_dir for the cards' quote clips"
            " (then deleted); 0 keeps none and the cards get no clip buttons."
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
        if value.startswith(POSTGRES_SCHEMES):
            try:  # here, when the config is read: not at the first query, as a traceback
                importlib.import_module("psycopg2")
            except ImportError:
                raise ValueError(
                    "PostgreSQL needs its driver, psycopg2: pip install 'salesbot-poller[postgres]'"
                ) from None
        return value


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
    trackers: list[TrackerConfig] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _one_zone(cls, data: object) -> object:
        """`poller.timezone` is `amocrm.timezone` by another name: copied there when only it is
        set (and names a zone: a bad one is reported under its own key); both set must agree."""
        if not isinstance(data, dict):
            return data
        poller, amo = data.get("poller"), data.get("amocrm")
        alias = poller.get("timezone") if isinstance(poller, dict) else getattr(poller, "timezone", "")
        if not isinstance(alias, str) or not alias:
            return data
        zone = amo.get("timezone") if isinstance(amo, dict) else getattr(amo, "timezone", "")
        if zone and zone != alias:
            raise ValueError(f"poller.timezone ({alias}) and amocrm.timezone ({zone}) differ: set one of them")
        try:
            _zone(alias)
        except ValueError:
            return data
        if isinstance(amo, BaseModel):
            return {**data, "amocrm": amo.model_copy(update={"timezone": alias})}
        return {**data, "amocrm": {**(amo if isinstance(amo, dict) else {}), "timezone": alias}}

    @field_validator("profiles")
    @classmethod
    def _unique_names(cls, profiles: list[Profile]) -> list[Profile]:
        names = [p.name for p in profiles]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"profile names must be unique: {', '.join(doubled)} more than once")
        return profiles

    @field_validator("trackers", mode="before")
    @classmethod
    def _tracker_count(cls, value: object) -> object:
        return too_many_trackers(value)

    @field_validator("trackers")
    @classmethod
    def _unique_trackers(cls, trackers: list[TrackerConfig]) -> list[TrackerConfig]:
        _raise_at(tracker_problems(trackers), trackers)  # its locations get the field's name in front
        return trackers

    @model_validator(mode="after")
    def _known_trackers(self) -> Config:
        names = {t.name for t in self.trackers}
        unknown = [
            (("profiles", i, "trackers", j), f'"{name}" is not a [[trackers]] name')
            for i, profile in enumerate(self.profiles)
            for j, name in enumerate(profile.trackers or [])
            if name not in names
        ]
        _raise_at(unknown, self)
        return self

    @property
    def openai_concurrency(self) -> int:
        """`openai.max_concurrent_requests`, or 2 x `poller.workers` when it is 0: a stereo call
        transcribes its two channels at once, so each worker may want two slots."""
        return self.openai.max_concurrent_requests or 2 * self.poller.workers

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


def _raise_at(problems: Sequence[tuple[tuple[int | str, ...], str]], value: object) -> None:
    """A ValidationError of one error per (location, message), each shown at its own key."""
    if problems:
        raise ValidationError.from_exception_data(
            "Config",
            [
                InitErrorDetails(type=PydanticCustomError("config_rule", message), loc=loc, input=value)
                for loc, message in problems
            ],
        )


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
