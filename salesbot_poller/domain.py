"""Typed values passed between the services and the pipeline, and the small interfaces
(Protocols) the pipeline depends on. Real clients live in one module per service; unit tests
pass in-memory fakes that satisfy the same Protocols."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Direction = Literal["in", "out"]

# Personal data the analysis may hide from the chat model (`analysis.redact`, `redact_pii`).
RedactKind = Literal["phone", "email", "card", "passport"]
REDACT_KINDS: tuple[RedactKind, ...] = ("phone", "email", "card", "passport")
DEFAULT_REDACT_KINDS: tuple[RedactKind, ...] = ("phone", "card")

# amoCRM events name the entity in the singular; every URL uses the plural.
ENTITY_PLURAL = {"lead": "leads", "contact": "contacts", "company": "companies", "customer": "customers"}

NOT_REACHED_STATUSES = (6, 7)  # a call note's `call_status`: not reached, busy
MANAGER_UNKNOWN = "не назначен"  # a call with no responsible user, as the messages say it


def answered(duration: int | None, call_status: int | None) -> bool:
    """Whether a call was a conversation: it lasted, and its status is not "not reached"/"busy"."""
    return bool(duration) and call_status not in NOT_REACHED_STATUSES


def says_missed(duration: int | None, call_status: int | None) -> bool:
    """Whether a call note says the call was not answered: a status "not reached"/"busy", or a
    duration of 0. A note with neither (no duration, no status) says nothing either way."""
    return call_status in NOT_REACHED_STATUSES or duration == 0


MIN_CALLBACK_DIGITS = 7  # fewer: an extension or a service code, not a number to call back


def callback_number(phone: str | None) -> bool:
    """Whether `phone` is a number someone can call back (at least 7 digits, as the follow-up
    matches numbers by their last 10)."""
    return len(re.sub(r"\D", "", phone or "")) >= MIN_CALLBACK_DIGITS


def local_time(timestamp: float, tz: tzinfo | None) -> datetime:
    """`timestamp` in `tz` (the account's zone); None: the server's local zone."""
    return datetime.fromtimestamp(timestamp, tz) if tz else datetime.fromtimestamp(timestamp).astimezone()


def named_zone(name: str) -> tzinfo | None:
    """The zone of `amocrm.timezone` (an IANA name, validated at load); "": None, the
    server's local zone."""
    return ZoneInfo(name) if name else None


TIME_FORMAT = "%Y-%m-%d %H:%M"  # what the commands print: `2026-12-05 14:03 Europe/Moscow`


def time_text(timestamp: float, tz: tzinfo | None, fmt: str = TIME_FORMAT) -> str:
    """How every command (and the journal's heartbeat) shows a moment to a person: in `tz`
    (None: the server's zone) with the zone named after it, by its IANA name when it has one
    (`2026-12-05 14:03 Europe/Moscow`), else its abbreviation (`UTC`, `MSK`, `UTC+10`)."""
    moment = local_time(timestamp, tz)
    name = str(getattr(tz, "key", "") or moment.tzname() or "UTC")
    return f"{moment.strftime(fmt)} {'UTC' + name if name[0] in '+-' else name}"


class Stage(StrEnum):
    """Where a call is. Each stage's result is committed before the next stage starts."""

    NEW = "new"  # event recorded; its note not read yet (or its recording link not there yet)
    READY = "ready"  # answered call with a recording: download next
    DOWNLOADED = "downloaded"  # audio on disk: transcribe next
    TRANSCRIBED = "transcribed"  # transcript stored: analyse next
    ANALYSED = "analysed"  # analysis stored: notify next
    MISSED = "missed"  # missed incoming call: alert next
    NOTIFYING = "notifying"  # message parts rendered and being sent; ids stored per part
    NOTIFIED = "notified"  # analysis message accepted by Telegram
    MISSED_ALERTED = "missed_alerted"  # missed-call alert accepted by Telegram
    SKIPPED = "skipped"  # nothing to do (too short, unanswered outgoing, ...): see skip_reason
    FAILED = "failed"  # gave up: see last_error
    # An unexpected error (data we cannot handle, or a bug): set aside at once, not retried by
    # itself (it would fail the same way every cycle); `retry` takes it back. See last_error.
    QUARANTINED = "quarantined"


TERMINAL_STAGES = frozenset({Stage.NOTIFIED, Stage.MISSED_ALERTED, Stage.SKIPPED, Stage.FAILED, Stage.QUARANTINED})
SET_ASIDE_STAGES = (Stage.FAILED, Stage.QUARANTINED)  # what `retry` takes back


@dataclass(frozen=True)
class CallEvent:
    """One `incoming_call` / `outgoing_call` event, validated."""

    event_id: str
    direction: Direction
    entity_type: str  # plural: leads, contacts, companies, customers
    entity_id: int
    note_id: int
    created_at: int


@dataclass(frozen=True)
class EventBatch:
    """Events of one window: the valid ones, and (event id, reason, the raw event as JSON when
    it is small enough to keep for `retry --event`) for each malformed one."""

    events: list[CallEvent]
    malformed: list[tuple[str, str, str | None]]


@dataclass(frozen=True)
class EntityDetails:
    """What the cards and the profiles need of a call's entity: its name and, for a lead,
    its pipeline and status (read in the same batched request)."""

    name: str
    pipeline_id: int | None = None
    status_id: int | None = None


@dataclass(frozen=True)
class CallNote:
    """The call details from a `call_in` / `call_out` note."""

    note_id: int
    duration: int | None  # None: the note has no `params.duration` (not the same as 0)
    phone: str
    link: str | None
    call_status: int | None
    source: str
    responsible_user_id: int | None
    call_responsible: str | None


@dataclass(frozen=True)
class Segment:
    """A stretch of speech; times in seconds from the start of the recording."""

    start: float
    end: float
    text: str
    # "left"/"right": the stereo channel it was heard on; a diarizing model's label ("A",
    # "B", ...); "" when nobody knows who spoke.
    speaker: str = ""


@dataclass(frozen=True)
class Transcript:
    text: str
    duration_seconds: float | None = None
    segments: tuple[Segment, ...] = ()
    # False when the model gives no timestamps (json-only models): a segment then spans a
    # whole upload chunk, good for who-said-what but not for timing metrics.
    timed: bool = True
    model: str = ""
    audio_seconds: float = 0.0  # audio sent to the API (what is billed), overlaps included
    input_tokens: int = 0
    output_tokens: int = 0
    # Each upload was already paid through an `UploadMeter` (recorded as it was answered):
    # the pipeline must not record this transcript's usage again.
    metered: bool = False
    # The recording was longer than the transcriber's cap (`poller.max_call_minutes`): only
    # its first `cut_at_seconds` were decoded and transcribed. None: transcribed whole.
    cut_at_seconds: float | None = None


class ConversationMetrics(BaseModel):
    """Who talked how much, from the segment times; see `dialogue.conversation_metrics`.

    Shares are fractions 0..1. Timing fields are None when the transcript has no timestamps.
    """

    duration: float
    manager_share: float
    client_share: float
    silence_share: float | None
    longest_monologue: float | None
    longest_monologue_role: str | None  # "manager" / "client"
    interruptions_by_manager: int | None
    interruptions_by_client: int | None
    manager_questions: int


Verdict = Literal["done", "partly", "missed", "not_applicable"]
# As stored: "not_assessed" is an item the model's answer left out (a server without strict
# structured output); it is shown as such and left out of the score like "not_applicable".
StoredVerdict = Literal["done", "partly", "missed", "not_applicable", "not_assessed"]
Sentiment = Literal["positive", "neutral", "negative"]


class ItemVerdict(BaseModel):
    """The model's verdict on one rubric item (the item is the key it is given under)."""

    model_config = ConfigDict(extra="forbid")

    verdict: Verdict = Field(
        description="done — выполнено, partly — частично, missed — нет, not_applicable — неприменимо"
    )
    evidence: str = Field(description="Короткая дословная цитата из расшифровки (до 15 слов) или пустая строка")
    confidence: float = Field(description="Уверенность в вердикте от 0 до 1")


class ObjectionHandling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    objection: str = Field(description="Возражение клиента")
    handling: str = Field(description="Как менеджер отработал возражение; пустая строка, если никак")


class NextStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(description="Договорённый следующий шаг")
    due_date: str | None = Field(description="Дата шага в формате YYYY-MM-DD, если её назвали, иначе null")

    @field_validator("due_date")
    @classmethod
    def _iso_date(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                date.fromisoformat(value)
            except ValueError:
                raise ValueError(f"due_date must be YYYY-MM-DD or null, got {value!r}") from None
        return value


# The closed list's catch-all (`analysis.topics`): added to every configured list.
OTHER_TOPIC = "Другое"


class AnalysisAnswer(BaseModel):
    """What the chat model must return besides the verdicts (strict JSON schema: every field
    required). `rubric.answer_model(items)` adds `rubric`: an object with one required
    property per configured item id, each an `ItemVerdict`. The schema only: the answer is
    read by `answer_reader`, which keeps what is usable of a careless one."""

    model_config = ConfigDict(extra="forbid")

    summary: str = Field(description="Краткое содержание разговора, 2–4 предложения")
    topic: str = Field(description="Тема звонка одним-двумя словами, например: доставка, цена, рекламация")
    client_needs: list[str] = Field(description="Потребности клиента")
    objections: list[ObjectionHandling] = Field(description="Возражения клиента и как менеджер их отработал")
    next_step: NextStep | None = Field(description="Договорённый следующий шаг или null")
    risk_flags: list[str] = Field(description="Риски: клиент может уйти, грубость, обещания без оснований и т. п.")
    sentiment: Sentiment = Field(description="Настрой клиента в конце разговора")


class RubricResult(BaseModel):
    """One rubric item as stored: the configured title and weight with the model's verdict.

    `evidence` is the quote as the model gave it; `verified` says whether it was found in the
    transcript (None: no quote, or analysed before quotes were checked); `at` is where it was
    found, in seconds from the start of the call, when the transcript has timestamps. Only a
    verified quote is shown as a quote."""

    item_id: str
    title: str
    weight: float
    verdict: StoredVerdict
    evidence: str = ""
    confidence: float = 0.0
    verified: bool | None = None
    at: int | None = None


# What each verdict earns of an item's weight (`rubric_score`); the others are left out.
VERDICT_VALUE = {"done": 1.0, "partly": 0.5, "missed": 0.0}
# The verdicts a person may set when correcting the model (`with_corrections`).
HumanVerdict = Literal["done", "partly", "missed"]
HUMAN_VERDICTS: tuple[str, ...] = ("done", "partly", "missed")


def rubric_score(results: Sequence[RubricResult]) -> int | None:
    """The score 0..100 of rubric verdicts, computed in code, never by the model: each item's
    weight times its value (`VERDICT_VALUE`), divided by the weights of the items that were
    assessed and apply, rounded half up. None when no item counts. (`rubric.total_score`.)"""
    applicable = [r for r in results if r.verdict in VERDICT_VALUE]
    weights = sum(r.weight for r in applicable)
    if not applicable or weights <= 0:
        return None
    earned = sum(r.weight * VERDICT_VALUE[r.verdict] for r in applicable)
    return math.floor(100 * earned / weights + 0.5)  # half up: 62.5 -> 63, not banker's 62


def with_corrections(analysis: CallAnalysis, verdicts: dict[str, str]) -> CallAnalysis:
    """`analysis` as people corrected it: each item whose id is in `verdicts` (item id -> a
    `HUMAN_VERDICTS` value) has that verdict in place of the model's, and the score is
    recomputed (`rubric_score`). A copy: the stored analysis is never changed; an id the
    rubric does not hold, or a verdict outside `HUMAN_VERDICTS`, is ignored."""
    if not verdicts:
        return analysis
    rubric = [
        item.model_copy(update={"verdict": verdicts[item.item_id]})
        if verdicts.get(item.item_id) in HUMAN_VERDICTS
        else item
        for item in analysis.rubric
    ]
    return analysis.model_copy(update={"rubric": rubric, "score": rubric_score(rubric)})


class ModelUsage(BaseModel):
    """Tokens one analysis cost (every request, a re-ask included), for cost accounting."""

    model: str
    input_tokens: int = 0
    output_tokens: int = 0


class CallAnalysis(BaseModel):
    """The stored analysis of a call (`analysis_json`): the model's answer, the rubric with
    titles and weights, and the score computed in code (`rubric.total_score`)."""

    summary: str
    topic: str = ""
    rubric: list[RubricResult] = Field(default_factory=list)
    client_needs: list[str] = Field(default_factory=list)
    objections: list[ObjectionHandling] = Field(default_factory=list)
    next_step: NextStep | None = None
    risk_flags: list[str] = Field(default_factory=list)
    sentiment: Sentiment = "neutral"
    score: int | None = Field(description="0..100 from the rubric weights; None when every item was not applicable")
    usage: ModelUsage | None = None  # what the answer cost; None from a fake or an older version
    unverified_quotes: int = 0  # evidence quotes not found in the transcript (not shown)
    condensed: bool = False  # scored on a condensed transcript (a long call)
    summary_missing: bool = False  # the model gave no usable summary nor verdicts, twice
    # `topic` is one of `analysis.topics` (or OTHER_TOPIC), not the model's own words: it
    # survives the removal of personal data (`without_personal_data`).
    topic_closed: bool = False
    # What was dropped from a careless answer, one line each, for the log; not stored.
    problems: list[str] = Field(default_factory=list, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _from_earlier_versions(cls, data: Any) -> Any:
        # Calls analysed before the rubric stored objections and the next step as plain text;
        # read them so an upgrade never strands a call between analysis and delivery.
        if isinstance(data, dict):
            data = dict(data)
            objections = data.get("objections")
            if isinstance(objections, list):
                data["objections"] = [{"objection": o, "handling": ""} if isinstance(o, str) else o for o in objections]
            if isinstance(data.get("next_step"), str):
                data["next_step"] = {"action": data["next_step"], "due_date": None}
        return data


@dataclass(frozen=True)
class Destination:
    """A Telegram chat and, in a forum supergroup, a topic (`message_thread_id`)."""

    chat_id: str
    thread_id: int | None = None


@dataclass(frozen=True)
class Planned:
    """One message, document or amoCRM write, fixed before anything is sent (`delivery`).

    `key` says what goes where (`call:<id>` is a call's own card or alert). `payload`:
    `{"parts": [html, ...]}`, or `{"filename", "caption", "text"}`, or `{"photo", "caption"}` (a
    PNG as base64), or `{"path", "body"}` for amoCRM. `reply_to_key`: another item's key, in the same chat."""

    key: str
    kind: str
    to: Destination | None
    payload: dict[str, Any]
    reply_to_key: str | None = None


@dataclass(frozen=True)
class CallContext:
    """What the analysis prompt and the Telegram message say about a call."""

    direction: Direction
    manager: str
    entity_kind: str  # plural entity type
    entity_name: str
    entity_url: str
    phone: str
    duration: int
    started_at: int
    metrics: ConversationMetrics | None = None  # stereo or diarized calls only
    profile: str = ""  # the `[[profiles]]` name; "" without profiles (the card then names none)
    cut_minutes: int = 0  # the recording was cut there (`poller.max_call_minutes`); 0: whole


class CallSource(Protocol):
    """amoCRM as the pipeline sees it."""

    def call_events(self, since: int, until: int) -> EventBatch: ...

    def call_notes(self, entity_type: str, note_ids: list[int]) -> dict[int, CallNote | str]:
        """Notes by id; a malformed note maps to the reason it cannot be used."""
        ...

    def user_names(self) -> dict[int, str]: ...

    def user_groups(self) -> dict[int, int | None]:
        """User id -> its group id (amoCRM's `rights.group_id`), from the same cached list."""
        ...

    def entity_details(self, entity_type: str, ids: list[int]) -> dict[int, EntityDetails]: ...

    def entity_url(self, entity_type: str, entity_id: int) -> str: ...


class RecordingFetcher(Protocol):
    def download(self, url: str, stem: str, note_seconds: int) -> Path:
        """The recording at `url`, saved as `<stem>.<ext>`; `note_seconds`: the call's length as
        its note says (0: unknown), against which the recording's real length is checked."""
        ...


class UploadMeter(Protocol):
    """Pays for a transcription one upload at a time (the daily budget, `pipeline.usage`).

    `reserve(seconds, model)` before an upload of `seconds` of audio: a ticket, or
    `errors.BudgetReached` when the upload would cross the budget (then nothing is sent).
    After the answer, `spent(ticket, ...)` turns the reservation into recorded usage; when
    the upload failed, `release(ticket)` gives it back. Thread-safe (two channels at once)."""

    def reserve(self, seconds: float, model: str) -> int: ...

    def spent(self, ticket: int, audio_seconds: float, input_tokens: int, output_tokens: int) -> None: ...

    def release(self, ticket: int) -> None: ...


class Transcriber(Protocol):
    def transcribe(self, audio: Path, meter: UploadMeter | None = None, keep: Path | None = None) -> Transcript:
        """The transcript of `audio`; with `meter`, every upload is reserved and paid
        through it (and `Transcript.metered` is True); with `keep`, the prepared audio it was
        made from is left in that directory (`services.clip_files`: the quote clips' audio)."""
        ...


class Analyzer(Protocol):
    def analyse(self, transcript: str, context: CallContext) -> CallAnalysis: ...


class Notifier(Protocol):
    def send(
        self, html: str, to: Destination | None = None, reply_to: int | None = None, keyboard: Keyboard | None = None
    ) -> int:
        """Send one HTML message (to the default chat when `to` is None, as a reply to message
        `reply_to` of that chat when given, with inline buttons `keyboard`); return Telegram's
        message id."""
        ...

    def answer_callback(self, callback_id: str, text: str = "", show_alert: bool = False) -> None:
        """Answer a button press (`answerCallbackQuery`): `text` shown to the presser only."""
        ...

    def edit_reply_markup(self, chat_id: str, message_id: int, keyboard: Keyboard | None) -> None:
        """Replace the buttons under one of the bot's messages (`editMessageReplyMarkup`)."""
        ...

    def edit_message_text(self, chat_id: str, message_id: int, html: str, keyboard: Keyboard | None = None) -> None:
        """Replace the text (and buttons) of one of the bot's messages (`editMessageText`)."""
        ...

    def send_document(
        self, filename: str, data: bytes, caption: str, to: Destination | None = None, reply_to: int | None = None
    ) -> int:
        """Send a file with an HTML caption; return Telegram's message id."""
        ...

    def send_photo(self, png: bytes, caption: str, to: Destination | None = None, reply_to: int | None = None) -> int:
        """Send a PNG picture with an HTML caption (the weekly chart); return Telegram's message id."""
        ...

    def send_voice(self, data: bytes, caption: str, to: Destination | None = None, reply_to: int | None = None) -> str:
        """Send OGG/Opus `data` as a voice message with an HTML caption (a quote's clip); return
        Telegram's file id. A chat refusing voice messages raises `errors.VoiceForbidden`."""
        ...

    def send_audio(self, data: bytes, caption: str, to: Destination | None = None, reply_to: int | None = None) -> str:
        """Send OGG/Opus `data` as an audio file with an HTML caption; return Telegram's file id."""
        ...

    def send_voice_id(
        self, file_id: str, caption: str, to: Destination | None = None, reply_to: int | None = None
    ) -> str:
        """Send again a voice message Telegram holds (`file_id`); return its file id."""
        ...

    def send_audio_id(
        self, file_id: str, caption: str, to: Destination | None = None, reply_to: int | None = None
    ) -> str:
        """Send again an audio file Telegram holds (`file_id`); return its file id."""
        ...


@dataclass(frozen=True)
class ObjectionGroup:
    """Client objections of one kind (the weekly report): a short title and how many there were."""

    title: str
    count: int


@dataclass(frozen=True)
class ObjectionGrouping:
    groups: list[ObjectionGroup]  # most frequent first
    usage: ModelUsage  # what the request cost


# A grouper is given at most this many of a week's objections (the first ones, by call): one
# bounded request, and the weekly report never reads more of their texts.
OBJECTIONS_GROUPED = 300


class ObjectionGrouper(Protocol):
    """Groups a week's objections by meaning (one chat-model request; see `OBJECTIONS_GROUPED`)."""

    def group(self, objections: Sequence[str]) -> ObjectionGrouping: ...


# Inline buttons under a message: rows of (text, callback_data) (`pipeline.buttons`).
Keyboard = list[list[tuple[str, str]]]


@dataclass(frozen=True)
class Press:
    """A button of one of the bot's messages was pressed (Bot API `callback_query`).

    `message_id` and `message_date` (Unix seconds; 0 when Telegram no longer shows the
    message) are the message the button is under, in `chat_id`; `user_name` is the presser's
    first and last name as Telegram gives them (or their @username)."""

    callback_id: str
    user_id: int
    user_name: str
    chat_id: str
    message_id: int
    message_date: int
    data: str


@dataclass(frozen=True)
class Incoming:
    """One update the bot received: a text message (or nothing of ours: `text` "").

    `sender_chat_id`: the chat the message was sent on behalf of (Bot API `sender_chat`): the
    group itself for an anonymous admin (then `user_id` is Telegram's placeholder
    GroupAnonymousBot), a channel for a linked channel's post; None for a person."""

    update_id: int
    chat_id: str = ""
    user_id: int | None = None
    message_id: int = 0
    text: str = ""
    sender_chat_id: str | None = None
    press: Press | None = None  # a button pressed (then `text` is "")


class UpdateSource(Protocol):
    """The bot's incoming messages (Telegram `getUpdates`), for its commands."""

    def username(self) -> str:
        """The bot's @username, without the @."""
        ...

    def fetch(self, offset: int | None, wait: int) -> list[Incoming]:
        """Updates from `offset` (confirming those below it), waiting up to `wait` s for one."""
        ...


class CrmWriter(Protocol):
    """amoCRM writes (notes, tasks; lead fields and tags) and the reads they need."""

    def post(self, path: str, payload: Any) -> dict[str, Any] | None: ...

    def patch(self, path: str, payload: Any) -> dict[str, Any] | None: ...

    def leads(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        """Leads by id as amoCRM has them now; a deleted one is absent."""
        ...


# What the analysis keeps once a call's personal data is removed (retention, `forget`): the
# scores and verdicts reports need, the sentiment, and the topic when it is a name of the
# closed list (`topic_closed`). Everything else is words said in the call (evidence quotes)
# or a paraphrase of them (summary, needs, objections, next step, risks, a free topic),
# which can name people, addresses, sums.
_ANALYSIS_EMPTIED: dict[str, Any] = {
    "summary": "",
    "client_needs": [],
    "objections": [],
    "next_step": None,
    "risk_flags": [],
}


def without_personal_data(analysis_json: str | None) -> str | None:
    """`analysis_json` with the quotes and paraphrases removed (see `_ANALYSIS_EMPTIED`); it
    still reads as a `CallAnalysis`. None stays None; an unreadable one is dropped."""
    if analysis_json is None:
        return None
    try:
        data = json.loads(analysis_json)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    data.update(_ANALYSIS_EMPTIED)
    if data.get("topic_closed") is not True:
        data["topic"] = ""
    rubric = data.get("rubric")
    if isinstance(rubric, list):
        data["rubric"] = [item | {"evidence": ""} if isinstance(item, dict) else item for item in rubric]
    return json.dumps(data, ensure_ascii=False)
