"""Typed values passed between the services and the pipeline, and the small interfaces
(Protocols) the pipeline depends on. Real clients live in one module per service; unit tests
pass in-memory fakes that satisfy the same Protocols."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

Direction = Literal["in", "out"]

# amoCRM events name the entity in the singular; every URL uses the plural.
ENTITY_PLURAL = {"lead": "leads", "contact": "contacts", "company": "companies", "customer": "customers"}


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


TERMINAL_STAGES = frozenset({Stage.NOTIFIED, Stage.MISSED_ALERTED, Stage.SKIPPED, Stage.FAILED})


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
    """Events of one window: the valid ones, and (event id, reason) for each malformed one."""

    events: list[CallEvent]
    malformed: list[tuple[str, str]]


@dataclass(frozen=True)
class CallNote:
    """The call details from a `call_in` / `call_out` note."""

    note_id: int
    duration: int
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


class CallAnalysis(BaseModel):
    """What the chat model must return (strict JSON schema): every field required."""

    model_config = ConfigDict(extra="forbid")

    summary: str = Field(description="Краткое содержание разговора, 2–4 предложения")
    score: int = Field(description="Оценка работы менеджера от 0 до 100")
    went_well: list[str] = Field(description="Что менеджер сделал хорошо")
    to_improve: list[str] = Field(description="Что менеджеру стоит улучшить")
    objections: list[str] = Field(description="Возражения клиента")
    next_step: str | None = Field(description="Договорённый следующий шаг или null")

    @field_validator("score")
    @classmethod
    def _score_range(cls, value: int) -> int:
        # Checked here rather than as schema min/max: not every OpenAI-compatible server
        # supports those keywords in strict mode.
        if not 0 <= value <= 100:
            raise ValueError(f"score must be 0..100, got {value}")
        return value


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


class CallSource(Protocol):
    """amoCRM as the pipeline sees it."""

    def call_events(self, since: int, until: int) -> EventBatch: ...

    def call_notes(self, entity_type: str, note_ids: list[int]) -> dict[int, CallNote | str]:
        """Notes by id; a malformed note maps to the reason it cannot be used."""
        ...

    def user_names(self) -> dict[int, str]: ...

    def entity_names(self, entity_type: str, ids: list[int]) -> dict[int, str]: ...

    def entity_url(self, entity_type: str, entity_id: int) -> str: ...


class RecordingFetcher(Protocol):
    def download(self, url: str, stem: str) -> Path: ...


class Transcriber(Protocol):
    def transcribe(self, audio: Path) -> Transcript: ...


class Analyzer(Protocol):
    def analyse(self, transcript: str, context: CallContext) -> CallAnalysis: ...


class Notifier(Protocol):
    def send(self, html: str) -> int:
        """Send one HTML message; return Telegram's message id."""
        ...
