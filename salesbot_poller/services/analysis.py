"""Call analysis with an OpenAI chat model and structured output.

Contract: `OpenAIAnalyzer.analyse(transcript, context)` asks the chat model for an answer in
the JSON schema of `rubric.answer_model(items)` (one required property per rubric item) and
returns the stored form (`domain.CallAnalysis`) with the score computed in code.
- The answer is read by `answer_reader.read_answer`, which keeps what is usable: an item left
  out is "not assessed" (shown so, left out of the score), a malformed optional field is
  dropped; what was dropped is in `CallAnalysis.problems` (one log line each). Only an answer
  with neither a summary nor a verdict is asked again, once, quoting why; if the second one is
  no better, the analysis says `summary_missing` and the call still goes out: the paid
  transcription is never lost to a careless answer.
- Every evidence quote is looked up in the transcript the model was sent (`quotes`); one
  not found keeps its verdict, `verified=False`, and counts in `unverified_quotes`; one found
  gets `verified=True` and its time in the call when the transcript has timestamps.
- A transcript longer than `max_transcript_chars` is condensed first, part by part in order
  (plain-text requests, counted in the usage), and scored on the condensed text
  (`condensed=True`); quotes are still looked up in the whole transcript.
- Cut off by the length limit: `TransientError` (a later attempt may fit); a refusal:
  `PermanentError`; service errors as `openai_errors.map_openai_error` says.
- Each request holds a slot of `limit` (`openai_limit.RequestLimit`, shared with the
  transcription and every worker) while it is in flight; no limit when None.
- Personal data of the kinds in `redact` (`analysis.redact`; see `redact_pii`) is replaced
  by placeholders in the user turn (the transcript and the client's name) before anything is
  sent, and in every text of the answer before it is returned: the model never sees such a
  value, and the stored analysis never holds one even if the model made one up. The caller's
  transcript itself is not changed (it is stored as heard).
- With a closed topic list (`topics`, `analysis.topics` or the profile's), the schema makes
  `topic` an enum of it plus "Другое" and the prompt says to choose one; an answer outside
  the list (a server that does not enforce the schema) is mapped onto it
  (`rubric.closed_topic`), so the stored topic is always a listed name, `topic_closed=True`.
  With no list, the model's own words, `topic_closed=False`.
- The prompts are in `prompts`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import tzinfo
from typing import Any

import openai
import pydantic
from openai.lib import type_to_response_format_param

from salesbot_poller.config import DEFAULT_RUBRIC, Endpoint, RubricItem, topic_choices
from salesbot_poller.domain import CallAnalysis, CallContext, ModelUsage
from salesbot_poller.errors import PermanentError, TransientError
from salesbot_poller.logs import excerpt
from salesbot_poller.services.answer_reader import Reading, read_answer
from salesbot_poller.services.openai_errors import map_openai_error
from salesbot_poller.services.openai_limit import RequestLimit
from salesbot_poller.services.prompts import (
    REASK,
    SYSTEM_PROMPT,
    build_system_prompt,
    build_user_message,
    condense_messages,
)
from salesbot_poller.services.quotes import QUOTE_THRESHOLD, QuoteIndex, verified
from salesbot_poller.services.redact_pii import DEFAULT_KINDS, redact
from salesbot_poller.services.rubric import answer_model, closed_topic, to_analysis, topic_key

log = logging.getLogger(__name__)

# About 30,000 tokens of Russian text: a quarter of a 128k-token context, which leaves room
# for the prompt, the answer and a model that counts Cyrillic dearly.
DEFAULT_MAX_TRANSCRIPT_CHARS = 100_000


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


def check_quotes(analysis: CallAnalysis, transcript: str, threshold: float = QUOTE_THRESHOLD) -> CallAnalysis:
    """Each item's quote looked up in `transcript` (see the module contract)."""
    index = QuoteIndex(transcript)
    results, unverified = [], 0
    for result in analysis.rubric:
        match = index.find(result.evidence)
        if match is None:
            results.append(result)
            continue
        found = verified(match, threshold)
        unverified += not found
        results.append(result.model_copy(update={"verified": found, "at": match.at if found else None}))
    return analysis.model_copy(update={"rubric": results, "unverified_quotes": unverified})


def split_lines(text: str, size: int) -> list[str]:
    """`text` in parts of at most about `size` characters, cut between lines (a line longer
    than `size` is a part of its own, cut at `size`)."""
    parts: list[str] = []
    current: list[str] = []
    length = 0
    for line in text.splitlines():
        while len(line) > size:
            parts.append(line[:size])
            line = line[size:]
        if current and length + len(line) + 1 > size:
            parts.append("\n".join(current))
            current, length = [], 0
        current.append(line)
        length += len(line) + 1
    if current:
        parts.append("\n".join(current))
    return parts


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
        max_transcript_chars: int = DEFAULT_MAX_TRANSCRIPT_CHARS,
        quote_threshold: float = QUOTE_THRESHOLD,
        endpoint: Endpoint | None = None,
        topics: Sequence[str] = (),
    ) -> None:
        self._client = client
        self._endpoint = endpoint  # named in errors (`openai_errors`)
        self._model = model
        self._rubric = rubric
        self._ids = tuple(item.id for item in rubric)
        self._topics = topic_choices(tuple(topics))
        self._format = type_to_response_format_param(answer_model(rubric, self._topics))
        self._system = build_system_prompt(prompt_template, rubric, self._topics)
        self._tz = tz
        self._redact = tuple(redact)
        self._max_chars = max_transcript_chars
        self._threshold = quote_threshold
        self.limit = limit
        self._slot: AbstractContextManager[None] = limit if limit is not None else nullcontext()

    def analyse(self, transcript: str, context: CallContext) -> CallAnalysis:
        spent = ModelUsage(model=self._model)  # summed over every request of this analysis
        sent = redact(transcript, self._redact)  # what the model sees, and what its quotes are checked against
        condensed = len(sent) > self._max_chars
        text = self._condense(sent, spent) if condensed else sent
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self._system},
            {"role": "user", "content": build_user_message(text, context, self._tz, self._redact, condensed)},
        ]
        reading, content = self._ask(messages, spent)
        problems = list(reading.problems)
        if not reading.usable:
            why = reading.problems[0] if reading.problems else "empty answer"
            messages.append({"role": "assistant", "content": content or ""})
            messages.append({"role": "user", "content": REASK.format(error=why)})
            reading, _ = self._ask(messages, spent)
            problems = [f"re-asked: {why}", *reading.problems]
            if not reading.usable:
                problems.append("the second answer had no summary nor verdicts either: sent without them")
        analysis = check_quotes(to_analysis(reading, self._rubric), sent, self._threshold)
        analysis = redact_analysis(analysis, self._redact)
        # The problems quote the model's values, which may hold a number it made up: redacted too.
        problems = [redact(problem, self._redact) for problem in problems]
        if self._topics:
            analysis = self._close_topic(analysis, problems)
        return analysis.model_copy(update={"usage": spent, "condensed": condensed, "problems": problems})

    def _close_topic(self, analysis: CallAnalysis, problems: list[str]) -> CallAnalysis:
        """The answer's topic as a name of the closed list (see the module contract)."""
        topic = closed_topic(analysis.topic, self._topics)
        if topic_key(topic) != topic_key(analysis.topic):  # not the same name: the model went off the list
            problems.append(f"topic {excerpt(analysis.topic, 60)!r} is not in analysis.topics: {topic}")
        return analysis.model_copy(update={"topic": topic, "topic_closed": True})

    def _completion(self, messages: list[dict[str, Any]], spent: ModelUsage, what: str, **extra: Any) -> Any:
        """One chat request; the usage added to `spent`; the first choice."""
        try:
            with self._slot:
                completion = self._client.chat.completions.create(
                    model=self._model,
                    messages=messages,  # type: ignore[arg-type]
                    **extra,
                )
        except openai.OpenAIError as exc:
            raise map_openai_error(exc, what, self._model, self._endpoint, "openai.analysis_model") from None
        except ValueError:  # a body that is not JSON
            raise TransientError(f"OpenAI {what} ({self._model}): malformed answer (not JSON)") from None
        if completion.usage is not None:
            spent.input_tokens += completion.usage.prompt_tokens
            spent.output_tokens += completion.usage.completion_tokens
        if not completion.choices:
            raise TransientError(f"OpenAI {what} ({self._model}): an answer with no choices")
        choice = completion.choices[0]
        if choice.message.refusal:
            raise PermanentError(f"{what} model refused: {excerpt(choice.message.refusal)}")
        return choice

    def _ask(self, messages: list[dict[str, Any]], spent: ModelUsage) -> tuple[Reading, str | None]:
        choice = self._completion(messages, spent, "analysis", response_format=self._format)
        if choice.finish_reason == "length":
            raise TransientError("analysis answer was cut off (length limit)")
        content = choice.message.content
        return read_answer(content, self._ids), content

    def _condense(self, transcript: str, spent: ModelUsage) -> str:
        parts = split_lines(transcript, self._max_chars)
        chars = max(1000, self._max_chars // (2 * len(parts)))
        condensed = []
        for number, part in enumerate(parts, 1):
            choice = self._completion(condense_messages(part, number, len(parts), chars), spent, "condensing")
            condensed.append((choice.message.content or "").strip())
        # A model that ignored the target must not push the scoring request past the context.
        return "\n".join(condensed)[: self._max_chars]


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


def probe_structured_output(client: openai.OpenAI, model: str, endpoint: Endpoint | None = None) -> str:
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
        raise map_openai_error(exc, "structured-output check", model, endpoint, "openai.analysis_model") from None
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
