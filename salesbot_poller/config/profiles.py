"""The sales-script rubric, the `[analysis]` section and the `[[profiles]]` tables.

Contract:
- `DEFAULT_RUBRIC` is the built-in script; `[[analysis.rubric]]` replaces it, and a profile
  may bring its own (`rubric`, or `rubric_file`: a TOML file of `[[rubric]]` tables, read
  when the config is validated). Item ids are unique within a rubric (`unique_item_ids`).
- `prompt_file` settings name a file that exists and is read as `services.prompts` reads it:
  a regular file of at most 64 KB (`config.files`, as rubric files: both go into every
  request's system prompt).
- A `Profile` says which calls it takes (`entities`, `pipelines`, `statuses`, ...; an empty
  list matches anything) and what differs for them; a setting left out is the top-level one.
"""

from __future__ import annotations

import tomllib
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from salesbot_poller.config.files import PROMPT_LIMIT, read_text
from salesbot_poller.config.values import ChatId, ReadFile, _comma_list, _Section, context_reader, existing_file
from salesbot_poller.domain import DEFAULT_REDACT_KINDS, OTHER_TOPIC, RedactKind

MAX_TOPICS = 50
TOPIC_CHARS = 60


def unique_item_ids(items: tuple[RubricItem, ...]) -> tuple[RubricItem, ...]:
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"item ids must be unique, got {ids}")
    return items


def _topic_name(topic: str) -> str:
    name = " ".join(topic.split())
    if not name:
        raise ValueError("a topic must not be blank")
    if len(name) > TOPIC_CHARS:
        raise ValueError(f"a topic is at most {TOPIC_CHARS} characters, got {len(name)}")
    return name


# One name of a closed topic list, its spaces collapsed (a problem is named by its position).
TopicName = Annotated[str, AfterValidator(_topic_name)]


def closed_topics(topics: list[str]) -> list[str]:
    """A closed topic list (`analysis.topics`, a profile's `topics`) whose names passed
    `TopicName`: at most `MAX_TOPICS`, unique ignoring case; ValueError naming the repeated
    name's positions, from 1."""
    if len(topics) > MAX_TOPICS:
        raise ValueError(f"at most {MAX_TOPICS} topics, got {len(topics)}")
    seen: dict[str, int] = {}
    for number, name in enumerate(topics, 1):
        key = name.casefold()
        if key in seen:
            raise ValueError(f"topic {number} {name!r} repeats topic {seen[key]} (case is ignored)")
        seen[key] = number
    return topics


def topic_choices(topics: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """What the model may answer for a closed list: `topics` and `OTHER_TOPIC` (unless listed,
    in any case); () for an empty list (a free topic)."""
    if not topics:
        return ()
    listed = any(topic.casefold() == OTHER_TOPIC.casefold() for topic in topics)
    return tuple(topics) if listed else (*topics, OTHER_TOPIC)


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

    topics: list[TopicName] = Field(
        default_factory=list,
        description=(
            f'A closed list of call topics: the model must choose one of them, or "{OTHER_TOPIC}" (added by'
            f" itself); reports, BI tables and the card's hashtag group by these names, and the topic survives"
            f" `forget` and retention. Empty: the model names the topic in its own words. At most {MAX_TOPICS},"
            f" each at most {TOPIC_CHARS} characters, unique ignoring case."
        ),
    )

    @field_validator("topics")
    @classmethod
    def _closed_topics(cls, topics: list[str]) -> list[str]:
        return closed_topics(topics)

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
    def _readable(cls, value: str, info: ValidationInfo) -> str:
        return readable_prompt(value, context_reader(info.context))


EntityType = Literal["leads", "contacts", "companies"]
Direction = Literal["in", "out"]
ENTITY_TYPES: tuple[EntityType, ...] = ("leads", "contacts", "companies")
DIRECTIONS: tuple[Direction, ...] = ("in", "out")


def readable_prompt(value: str, read: ReadFile = read_text) -> str:
    """A `prompt_file` setting: "" (the built-in prompt), or a file that exists and is read
    within `PROMPT_LIMIT`; ValueError (`FileRejected`) saying why not."""
    if existing_file(value):
        try:
            read(value, PROMPT_LIMIT)
        except OSError as exc:
            raise ValueError(f"cannot read {value}: {exc.strerror}") from None
    return value


def _rubric_file(path: str, read: ReadFile = read_text) -> tuple[RubricItem, ...]:
    """The `[[rubric]]` tables of a TOML file (`profiles[].rubric_file`), read by `read`
    within `PROMPT_LIMIT`."""
    try:
        data = tomllib.loads(read(path, PROMPT_LIMIT))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    items = data.get("rubric")
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: needs [[rubric]] tables (id, title, done_when, weight)")
    try:
        return tuple(RubricItem.model_validate(item) for item in items)
    except ValidationError as exc:  # one line naming the item as counted, from 1 (not pydantic's block)
        first = exc.errors()[0]
        number = next(i for i, item in enumerate(items, 1) if _fails(item))
        key = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"{path}: rubric[{number}].{key}: {first['msg']}") from None


def _fails(item: object) -> bool:
    try:
        RubricItem.model_validate(item)
    except ValidationError:
        return True
    return False


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
    chat_id: ChatId = ""  # "": telegram.routes / chat_id
    message_thread_id: int | None = None
    alert_below_score: int | None = Field(None, ge=0, le=100)  # None: telegram.alert_below_score
    trackers: list[str] | None = None  # the `[[trackers]]` names this profile runs; None: all
    topics: list[TopicName] | None = None  # a closed list of its own (as analysis.topics); None: analysis.topics

    @field_validator("prompt_file")
    @classmethod
    def _readable(cls, value: str, info: ValidationInfo) -> str:
        return readable_prompt(value, context_reader(info.context))

    @field_validator("topics")
    @classmethod
    def _closed_topics(cls, topics: list[str] | None) -> list[str] | None:
        return None if topics is None else closed_topics(topics)

    @field_validator("rubric_file")
    @classmethod
    def _rubric_readable(cls, value: str, info: ValidationInfo) -> str:
        # Read here, so that a problem is named by its key; `_one_rubric` reads it again to keep it.
        if value:
            _rubric_file(value, context_reader(info.context))
        return value

    @model_validator(mode="after")
    def _one_rubric(self, info: ValidationInfo) -> Profile:
        if self.rubric and self.rubric_file:
            raise ValueError("set either rubric or rubric_file, not both")
        if self.rubric_file:
            object.__setattr__(self, "rubric", _rubric_file(self.rubric_file, context_reader(info.context)))
        unique_item_ids(self.rubric)
        return self

    @property
    def needs_lead(self) -> bool:
        """Whether matching needs the lead's pipeline and status."""
        return bool(self.pipelines or self.statuses)
