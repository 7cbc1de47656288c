"""The week's client objections grouped by a chat model (structured output), for the weekly report.

Contract: `OpenAIObjectionGrouper.group(objections)` sends ONE chat request (strict JSON
schema `GroupsAnswer`) with the objections as a numbered list, and returns `domain.ObjectionGrouping`: the
groups, most frequent first, each with a short Russian title and how many of the objections
it holds (the model says which numbers; counts are computed here, each number counted once,
numbers out of range ignored), and what the request cost (`ModelUsage`).
- At most `MAX_OBJECTIONS` objections are sent, each cut to `OBJECTION_CHARS` characters:
  a week's list stays one bounded request.
- Service errors are mapped like the analysis' (`openai_errors.map_openai_error`); an answer
  that is cut off, refused or not in the schema is a `PermanentError` (no re-ask: the report
  falls back to counting identical texts, see `weekly`).
- Each request holds a slot of `limit` (shared with every other OpenAI request) when given.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import openai
import pydantic
from pydantic import BaseModel, ConfigDict, Field

from salesbot_poller.config import Endpoint
from salesbot_poller.domain import OBJECTIONS_GROUPED, ModelUsage, ObjectionGroup, ObjectionGrouping
from salesbot_poller.errors import PermanentError
from salesbot_poller.logs import excerpt
from salesbot_poller.services.openai_errors import map_openai_error
from salesbot_poller.services.openai_limit import RequestLimit

MAX_OBJECTIONS = OBJECTIONS_GROUPED  # what the weekly report gives at most
OBJECTION_CHARS = 200
MAX_GROUPS = 8

SYSTEM_PROMPT = """\
Ты — руководитель отдела продаж. Тебе дают пронумерованный список возражений клиентов за неделю
(из разных звонков). Сгруппируй их по смыслу: одна группа — одно возражение, сказанное разными
словами (например «дорого», «у конкурентов дешевле», «нет бюджета» — это группа «Цена»).
Для каждой группы верни короткое название (2–4 слова, по-русски) и номера возражений, которые в неё
входят. Каждый номер — ровно в одной группе. Не больше {max_groups} групп: редкие объедини в «Другое»."""


class GroupAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(description="Название группы возражений, 2–4 слова")
    numbers: list[int] = Field(description="Номера возражений из списка, входящих в группу")


class GroupsAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    groups: list[GroupAnswer] = Field(description="Группы возражений")


def _user_message(objections: Sequence[str]) -> str:
    lines = [f"{n}. {' '.join(text.split())[:OBJECTION_CHARS]}" for n, text in enumerate(objections, 1)]
    return "Возражения клиентов за неделю:\n" + "\n".join(lines)


def count_groups(answer: GroupsAnswer, total: int) -> list[ObjectionGroup]:
    """Each objection number (1..total) counted once, in the first group naming it; empty
    groups dropped; most frequent first."""
    seen: set[int] = set()
    groups: list[ObjectionGroup] = []
    for group in answer.groups:
        numbers = {n for n in group.numbers if 1 <= n <= total} - seen
        seen |= numbers
        title = " ".join(group.title.split())
        if numbers and title:
            groups.append(ObjectionGroup(title, len(numbers)))
    return sorted(groups, key=lambda g: -g.count)


class OpenAIObjectionGrouper:
    """Implements `domain.ObjectionGrouper`."""

    def __init__(
        self, client: openai.OpenAI, model: str, limit: RequestLimit | None = None, endpoint: Endpoint | None = None
    ) -> None:
        self._endpoint = endpoint  # named in errors (`openai_errors`)
        self._client = client
        self._model = model
        self._slot: AbstractContextManager[None] = limit if limit is not None else nullcontext()

    def group(self, objections: Sequence[str]) -> ObjectionGrouping:
        sent = list(objections)[:MAX_OBJECTIONS]
        spent = ModelUsage(model=self._model)
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT.format(max_groups=MAX_GROUPS)},
            {"role": "user", "content": _user_message(sent)},
        ]
        try:
            with self._slot:
                completion = self._client.chat.completions.parse(
                    model=self._model,
                    messages=messages,  # type: ignore[arg-type]
                    response_format=GroupsAnswer,
                )
        except openai.LengthFinishReasonError:
            raise PermanentError("objection grouping: the answer was cut off (length limit)") from None
        except pydantic.ValidationError:
            raise PermanentError("objection grouping: the answer is not in the schema") from None
        except openai.OpenAIError as exc:
            what, setting = "objection grouping", "openai.analysis_model"
            raise map_openai_error(exc, what, self._model, self._endpoint, setting) from None
        except ValueError:
            raise PermanentError("objection grouping: malformed answer (not JSON)") from None
        if completion.usage is not None:
            spent = ModelUsage(
                model=self._model,
                input_tokens=completion.usage.prompt_tokens,
                output_tokens=completion.usage.completion_tokens,
            )
        message = completion.choices[0].message
        if message.refusal:
            raise PermanentError(f"objection grouping: the model refused: {excerpt(message.refusal)}")
        if message.parsed is None:
            raise PermanentError("objection grouping: the answer is empty")
        return ObjectionGrouping(count_groups(message.parsed, len(sent)), spent)
