"""In-memory fakes of the pipeline's interfaces (domain Protocols), for unit tests.

Each records what it was asked, and can be told to fail, so tests can check the pipeline's
decisions without any HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from salesbot_poller.domain import (
    CallAnalysis,
    CallContext,
    CallEvent,
    CallNote,
    Destination,
    EntityDetails,
    EventBatch,
    Keyboard,
    NextStep,
    ObjectionHandling,
    RubricResult,
    Transcript,
    UploadMeter,
)


@dataclass
class MemorySource:
    events: list[CallEvent] = field(default_factory=list)
    notes: dict[tuple[str, int], CallNote | str] = field(default_factory=dict)
    names: dict[tuple[str, int], str] = field(default_factory=dict)
    users: dict[int, str] = field(default_factory=dict)
    windows: list[tuple[int, int]] = field(default_factory=list)
    note_requests: list[tuple[str, list[int]]] = field(default_factory=list)
    fail_events: list[Exception] = field(default_factory=list)

    def add(self, event: CallEvent, note: CallNote, name: str = "") -> None:
        self.events.append(event)
        self.notes[(event.entity_type, event.note_id)] = note
        self.names[(event.entity_type, event.entity_id)] = name

    def call_events(self, since: int, until: int) -> EventBatch:
        self.windows.append((since, until))
        if self.fail_events:
            raise self.fail_events.pop(0)
        return EventBatch([e for e in self.events if since <= e.created_at <= until], [])

    def call_notes(self, entity_type: str, note_ids: list[int]) -> dict[int, CallNote | str]:
        self.note_requests.append((entity_type, list(note_ids)))
        return {i: self.notes[(entity_type, i)] for i in note_ids if (entity_type, i) in self.notes}

    def user_names(self) -> dict[int, str]:
        return self.users

    def user_groups(self) -> dict[int, int | None]:
        return {user: None for user in self.users}

    def entity_details(self, entity_type: str, ids: list[int]) -> dict[int, EntityDetails]:
        return {i: EntityDetails(self.names[(entity_type, i)]) for i in ids if (entity_type, i) in self.names}

    def entity_url(self, entity_type: str, entity_id: int) -> str:
        return f"https://acme.amocrm.ru/{entity_type}/detail/{entity_id}"


@dataclass
class MemoryRecordings:
    directory: Path
    failures: list[Exception] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)

    def download(self, url: str, stem: str, note_seconds: int) -> Path:
        self.downloads.append(url)
        if self.failures:
            raise self.failures.pop(0)
        path = self.directory / f"{stem}.mp3"
        path.write_bytes(b"ID3" + url.encode())
        return path


@dataclass
class MemoryTranscriber:
    text: str = "Менеджер: Добрый день! Клиент: Здравствуйте."
    failures: list[Exception] = field(default_factory=list)
    calls: list[Path] = field(default_factory=list)

    def transcribe(self, audio: Path, meter: UploadMeter | None = None, keep: Path | None = None) -> Transcript:
        self.calls.append(audio)
        if self.failures:
            raise self.failures.pop(0)
        return Transcript(text=f"{self.text} [{audio.read_bytes()[3:].decode()}]")


@dataclass
class MemoryAnalyzer:
    score: int | None = 50
    failures: list[Exception] = field(default_factory=list)
    calls: list[tuple[str, CallContext]] = field(default_factory=list)

    def analyse(self, transcript: str, context: CallContext) -> CallAnalysis:
        self.calls.append((transcript, context))
        if self.failures:
            raise self.failures.pop(0)
        return CallAnalysis(
            summary=f"Итог: {transcript[:40]}",
            topic="цена",
            rubric=[RubricResult(item_id="greeting", title="Приветствие", weight=1, verdict="partly")],
            objections=[ObjectionHandling(objection="Дорого", handling="Предложил рассрочку")],
            next_step=NextStep(action="Отправить КП", due_date=None),
            score=self.score,
        )


@dataclass
class MemoryNotifier:
    sent: list[str] = field(default_factory=list)
    failures: dict[int, Exception] = field(default_factory=dict)  # attempt number -> error
    attempts: int = 0
    # (kind, destination or None for the default chat, reply_to, html or file name), in order
    log: list[tuple[str, Destination | None, int | None, str]] = field(default_factory=list)
    keyboards: dict[int, Keyboard] = field(default_factory=dict)  # message id -> its buttons
    answers: list[tuple[str, str]] = field(default_factory=list)  # (callback id, text) answered
    edits: list[tuple[str, int, str | None, Keyboard | None]] = field(default_factory=list)  # (chat, id, text, buttons)

    def send(
        self, html: str, to: Destination | None = None, reply_to: int | None = None, keyboard: Keyboard | None = None
    ) -> int:
        self.attempts += 1
        if self.attempts in self.failures:
            raise self.failures.pop(self.attempts)
        self.sent.append(html)
        self.log.append(("message", to, reply_to, html))
        if keyboard is not None:
            self.keyboards[len(self.log)] = keyboard
        return len(self.log)

    def answer_callback(self, callback_id: str, text: str = "", show_alert: bool = False) -> None:
        self.answers.append((callback_id, text))

    def edit_reply_markup(self, chat_id: str, message_id: int, keyboard: Keyboard | None) -> None:
        self.edits.append((chat_id, message_id, None, keyboard))

    def edit_message_text(self, chat_id: str, message_id: int, html: str, keyboard: Keyboard | None = None) -> None:
        self.edits.append((chat_id, message_id, html, keyboard))

    def send_document(
        self, filename: str, data: bytes, caption: str, to: Destination | None = None, reply_to: int | None = None
    ) -> int:
        self.attempts += 1
        if self.attempts in self.failures:
            raise self.failures.pop(self.attempts)
        self.log.append(("document", to, reply_to, filename))
        return len(self.log)

    def send_photo(self, png: bytes, caption: str, to: Destination | None = None, reply_to: int | None = None) -> int:
        self.attempts += 1
        if self.attempts in self.failures:
            raise self.failures.pop(self.attempts)
        self.log.append(("photo", to, reply_to, caption))
        return len(self.log)

    def _clip(self, kind: str, caption: str, to: Destination | None, reply_to: int | None) -> str:
        self.attempts += 1
        if self.attempts in self.failures:
            raise self.failures.pop(self.attempts)
        self.log.append((kind, to, reply_to, caption))
        return f"{kind}-{len(self.log)}"

    def send_voice(self, data: bytes, caption: str, to: Destination | None = None, reply_to: int | None = None) -> str:
        return self._clip("voice", caption, to, reply_to)

    def send_audio(self, data: bytes, caption: str, to: Destination | None = None, reply_to: int | None = None) -> str:
        return self._clip("audio", caption, to, reply_to)

    def send_voice_id(
        self, file_id: str, caption: str, to: Destination | None = None, reply_to: int | None = None
    ) -> str:
        self._clip("voice", caption, to, reply_to)
        return file_id

    def send_audio_id(
        self, file_id: str, caption: str, to: Destination | None = None, reply_to: int | None = None
    ) -> str:
        self._clip("audio", caption, to, reply_to)
        return file_id
