"""Call analysis with an OpenAI chat model and strict structured output.

Contract: `OpenAIAnalyzer.analyse(transcript, context)` asks `chat.completions.parse` for an
answer in the JSON schema of `rubric.answer_model(items)` and returns the stored form
(`domain.CallAnalysis`) with the score computed in code (`rubric.total_score`).
- An answer that fails validation (the schema, a date that is not YYYY-MM-DD, a rubric item
  missing or doubled, an empty answer) gets exactly one re-ask that quotes the error; if the
  second answer fails too, `PermanentError` with that error: the call fails.
- Cut off by the length limit: `TransientError` (a later attempt may fit); a refusal:
  `PermanentError`; service errors as `openai_errors.map_openai_error` says.
- Each request (the re-ask too) holds a slot of `limit` (`openai_limit.RequestLimit`, shared
  with the transcription and every worker) while it is in flight; no limit when None.
- Personal data of the kinds in `redact` (`analysis.redact`; see `redact_pii`) is replaced
  by placeholders in the user turn (the transcript and the client's name) before anything is
  sent, and in every text of the answer before it is returned (the evidence quotes, summary,
  needs, objections, next step, risks): the model never sees such a value, and the stored
  analysis never holds one even if the model made one up. The caller's transcript itself is
  not changed (it is stored as heard).
- The system prompt is `SYSTEM_PROMPT` or the file named by `analysis.prompt_file`; the text
  `{rubric}` in it is replaced by the rubric list (`rubric.describe`). The prompt is Russian:
  the calls and the readers are.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import openai
import pydantic

from salesbot_poller.config import DEFAULT_RUBRIC, RubricItem
from salesbot_poller.domain import AnalysisAnswer, CallAnalysis, CallContext, ModelUsage
from salesbot_poller.errors import PermanentError, TransientError
from salesbot_poller.logs import excerpt
from salesbot_poller.services.dialogue import metrics_block
from salesbot_poller.services.openai_errors import map_openai_error
from salesbot_poller.services.openai_limit import RequestLimit
from salesbot_poller.services.redact_pii import DEFAULT_KINDS, redact
from salesbot_poller.services.rubric import answer_model, check_answer, describe, to_analysis

SYSTEM_PROMPT = """\
Ты — руководитель отдела продаж и разбираешь записи телефонных звонков менеджеров.
Тебе дают расшифровку звонка (автоматическую, возможны ошибки распознавания) и сведения о звонке.
Оценивай честно и конкретно, опираясь только на то, что есть в расшифровке.

Пункты скрипта продаж (id: название — что считается выполненным):
{rubric}

Верни:
- summary: суть разговора в 2–4 предложениях: кто звонил, зачем, чем закончилось;
- topic: тема звонка одним-двумя словами;
- rubric: по каждому пункту скрипта ровно один вердикт: done (выполнено), partly (частично),
  missed (не выполнено) или not_applicable (в этом разговоре неприменимо); evidence — короткая
  дословная цитата из расшифровки, подтверждающая вердикт (пустая строка, если цитаты нет);
  confidence — уверенность от 0 до 1;
- client_needs: потребности клиента;
- objections: возражения клиента и как менеджер отработал каждое;
- next_step: договорённый следующий шаг и его дата (YYYY-MM-DD), если её назвали; null, если
  не договорились;
- risk_flags: риски по сделке или нарушения (пустой список, если их нет);
- sentiment: настрой клиента к концу разговора: positive, neutral или negative.
Общую оценку не считай: её посчитает программа. Пиши по-русски, кратко, без воды.
Не выдумывай того, чего нет в расшифровке."""

REASK = "Ответ не прошёл проверку: {error}\nОтветь ещё раз целиком, строго по схеме, исправив эту ошибку."

DIRECTION_RU = {"in": "входящий", "out": "исходящий"}
WEEKDAYS_RU = ("понедельник", "вторник", "среда", "четверг", "пятница", "суббота", "воскресенье")


def load_prompt(path: str) -> str:
    """The system prompt template: the file's text, or the built-in one when `path` is ""."""
    return Path(path).read_text(encoding="utf-8") if path else SYSTEM_PROMPT


def build_system_prompt(template: str, items: tuple[RubricItem, ...]) -> str:
    # str.replace, not str.format: a custom template may hold JSON examples with braces.
    return template.replace("{rubric}", describe(items))


def build_user_message(
    transcript: str, context: CallContext, tz: tzinfo | None = None, kinds: Sequence[str] = ()
) -> str:
    """The user turn: call facts first (with the date, so "до пятницы" can become a date),
    then the conversation metrics when known, then the transcript. Values of `kinds` in the
    transcript and the client's name (amoCRM often names a contact by its number) are replaced
    by placeholders (`redact_pii.redact`)."""
    minutes, seconds = divmod(context.duration, 60)
    when = datetime.fromtimestamp(context.started_at, tz) if tz else datetime.fromtimestamp(context.started_at)
    metrics = f"{metrics_block(context.metrics)}\n\n" if context.metrics else ""
    return (
        f"Звонок: {DIRECTION_RU[context.direction]}, {when:%Y-%m-%d} ({WEEKDAYS_RU[when.weekday()]}), "
        f"длительность {minutes}:{seconds:02d}.\n"
        f"Менеджер: {context.manager}.\n"
        f"Клиент: {redact(context.entity_name, kinds)}.\n\n"
        f"{metrics}"
        f"Расшифровка:\n{redact(transcript, kinds)}"
    )


def redact_analysis(analysis: CallAnalysis, kinds: Sequence[str]) -> CallAnalysis:
    """`analysis` with values of `kinds` replaced by placeholders in each of its texts."""
    if not kinds:
        return analysis

    def scrub(text: str) -> str:
        return redact(text, kinds)

    step = analysis.next_step
    return analysis.model_copy(
        update={
            "summary": scrub(analysis.summary),
            "topic": scrub(analysis.topic),
            "rubric": [r.model_copy(update={"evidence": scrub(r.evidence)}) for r in analysis.rubric],
            "client_needs": [scrub(need) for need in analysis.client_needs],
            "objections": [
                o.model_copy(update={"objection": scrub(o.objection), "handling": scrub(o.handling)})
                for o in analysis.objections
            ],
            "next_step": step.model_copy(update={"action": scrub(step.action)}) if step is not None else None,
            "risk_flags": [scrub(risk) for risk in analysis.risk_flags],
        }
    )


class _Invalid(Exception):
    """An answer that failed validation; `content` is the model's text when we have it."""

    def __init__(self, error: str, content: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.content = content


def _validation_text(exc: pydantic.ValidationError) -> str:
    # Locations and messages only: pydantic's `input` would echo the transcript.
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "answer"
        parts.append(f"{where}: {str(error['msg']).removeprefix('Value error, ')}")
    more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return "; ".join(parts) + more


class OpenAIAnalyzer:
    """Implements `domain.Analyzer`."""

    def __init__(
        self,
        client: openai.OpenAI,
        model: str,
        rubric: tuple[RubricItem, ...] = DEFAULT_RUBRIC,
        prompt_template: str = SYSTEM_PROMPT,
        tz: tzinfo | None = None,
        limit: RequestLimit | None = None,
        redact: Sequence[str] = DEFAULT_KINDS,
    ) -> None:
        self._client = client
        self._model = model
        self._rubric = rubric
        self._answer = answer_model(rubric)
        self._system = build_system_prompt(prompt_template, rubric)
        self._tz = tz
        self._redact = tuple(redact)
        self.limit = limit
        self._slot: AbstractContextManager[None] = limit if limit is not None else nullcontext()

    def analyse(self, transcript: str, context: CallContext) -> CallAnalysis:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self._system},
            {"role": "user", "content": build_user_message(transcript, context, self._tz, self._redact)},
        ]
        spent = ModelUsage(model=self._model)  # summed over both requests when there is a re-ask
        try:
            answer = self._ask(messages, spent)
        except _Invalid as first:
            if first.content:
                messages.append({"role": "assistant", "content": first.content})
            messages.append({"role": "user", "content": REASK.format(error=first.error)})
            try:
                answer = self._ask(messages, spent)
            except _Invalid as second:
                raise PermanentError(f"analysis answer failed validation after a re-ask: {second.error}") from None
        analysis = redact_analysis(to_analysis(answer, self._rubric), self._redact)
        return analysis.model_copy(update={"usage": spent})

    def _ask(self, messages: list[dict[str, Any]], spent: ModelUsage) -> AnalysisAnswer:
        try:
            with self._slot:
                completion = self._client.chat.completions.parse(
                    model=self._model,
                    messages=messages,  # type: ignore[arg-type]
                    response_format=self._answer,
                )
        except openai.LengthFinishReasonError:
            raise TransientError("analysis answer was cut off (length limit)") from None
        except pydantic.ValidationError as exc:
            raise _Invalid(_validation_text(exc)) from None
        except openai.OpenAIError as exc:
            raise map_openai_error(exc, "analysis", self._model) from None
        except ValueError:  # after ValidationError (a ValueError too): a body that is not JSON
            raise TransientError(f"OpenAI analysis ({self._model}): malformed answer (not JSON)") from None
        if completion.usage is not None:
            spent.input_tokens += completion.usage.prompt_tokens
            spent.output_tokens += completion.usage.completion_tokens
        message = completion.choices[0].message
        if message.refusal:
            raise PermanentError(f"analysis model refused: {excerpt(message.refusal)}")
        if message.parsed is None:
            raise _Invalid("the answer is empty", message.content)
        try:
            check_answer(message.parsed, self._rubric)
        except ValueError as exc:
            raise _Invalid(str(exc), message.content) from None
        return message.parsed


class _Probe(pydantic.BaseModel):
    """The one-field answer `probe_structured_output` asks for."""

    model_config = pydantic.ConfigDict(extra="forbid")
    word: str


PROBE_MESSAGES = [
    {"role": "system", "content": "You answer in JSON."},
    {"role": "user", "content": 'Reply with the word "ok" as the field "word".'},
]
PROBE_MAX_TOKENS = 64


class SchemaIgnored(PermanentError):
    """The chat server answered, but not in the JSON schema it was sent: `answer` is its text."""

    def __init__(self, answer: str) -> None:
        super().__init__(f"ignores the JSON schema (answered: {excerpt(answer, 60)!r})")
        self.answer = answer


def probe_structured_output(client: openai.OpenAI, model: str) -> str:
    """Send `model` one tiny request with a one-field JSON schema (strict, as `analyse` sends
    it) and say how the answer came back: "json_schema" when it parses against the schema;
    `SchemaIgnored` when the server answered text that does not follow it; the error of
    `map_openai_error` when the server refused the request. An answer cut off by the token
    limit is "ignored" only when it does not even start as JSON ("json_schema, cut off")."""
    try:
        raw = client.chat.completions.with_raw_response.parse(
            model=model,
            messages=PROBE_MESSAGES,  # type: ignore[arg-type]
            response_format=_Probe,
            # Not the deprecated max_tokens, which OpenAI's reasoning models refuse; a server
            # that does not know this field ignores it.
            max_completion_tokens=PROBE_MAX_TOKENS,
        )
    except openai.OpenAIError as exc:
        raise map_openai_error(exc, "structured-output check", model) from None
    content = _first_content(raw.http_response)
    try:
        completion = raw.parse()
    except openai.LengthFinishReasonError:
        if content.lstrip().startswith("{"):
            return "json_schema, cut off"
        raise SchemaIgnored(content) from None
    except ValueError:  # pydantic's ValidationError included: not JSON, or not this JSON
        raise SchemaIgnored(content) from None
    message = completion.choices[0].message
    if message.refusal:
        raise PermanentError(f"analysis model refused the structured-output check: {excerpt(message.refusal)}")
    if message.parsed is None:
        raise SchemaIgnored(message.content or "")
    return "json_schema"


def _first_content(response: Any) -> str:
    """The first choice's text of a chat completion body, "" when there is none."""
    try:
        body = response.json()
        content = body["choices"][0]["message"]["content"]
    except (ValueError, LookupError, TypeError):
        return ""
    return content if isinstance(content, str) else ""
