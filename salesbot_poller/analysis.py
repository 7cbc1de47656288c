"""Call analysis with an OpenAI chat model and structured output (`domain.CallAnalysis`).

Contract: `OpenAIAnalyzer.analyse(transcript, context)` makes one chat completion with the
JSON schema of `CallAnalysis` and returns the validated model. An answer that is cut off or
fails validation is a `TransientError` (a later attempt may do better); a refusal is
permanent. The prompt is Russian: the calls and the readers are.
"""

from __future__ import annotations

import openai
import pydantic

from salesbot_poller.dialogue import metrics_block
from salesbot_poller.domain import CallAnalysis, CallContext
from salesbot_poller.errors import PermanentError, TransientError
from salesbot_poller.openai_errors import map_openai_error

SYSTEM_PROMPT = """\
Ты — руководитель отдела продаж и разбираешь записи телефонных звонков менеджеров.
Тебе дают расшифровку звонка (автоматическую, возможны ошибки распознавания) и сведения о звонке.
Оцени работу менеджера честно и конкретно, опираясь только на то, что есть в расшифровке.

Верни:
- summary: суть разговора в 2–4 предложениях: кто звонил, зачем, чем закончилось;
- score: оценка работы менеджера от 0 до 100 (приветствие и представление, выявление
  потребностей, презентация, работа с возражениями, договорённость о следующем шаге);
- went_well: что менеджер сделал хорошо (коротко, по пунктам);
- to_improve: что улучшить, с конкретной формулировкой, как сказать лучше;
- objections: возражения клиента (пустой список, если их не было);
- next_step: договорённый следующий шаг с датой, если её назвали; null, если не договорились.
Пиши по-русски, кратко, без воды. Не выдумывай того, чего нет в расшифровке."""

DIRECTION_RU = {"in": "входящий", "out": "исходящий"}


def build_user_message(transcript: str, context: CallContext) -> str:
    """The user turn: call facts first (with the conversation metrics when known), then the transcript."""
    minutes, seconds = divmod(context.duration, 60)
    metrics = f"{metrics_block(context.metrics)}\n\n" if context.metrics else ""
    return (
        f"Звонок: {DIRECTION_RU[context.direction]}, длительность {minutes}:{seconds:02d}.\n"
        f"Менеджер: {context.manager}.\n"
        f"Клиент: {context.entity_name}.\n\n"
        f"{metrics}"
        f"Расшифровка:\n{transcript}"
    )


class OpenAIAnalyzer:
    """Implements `domain.Analyzer`."""

    def __init__(self, client: openai.OpenAI, model: str) -> None:
        self._client = client
        self._model = model

    def analyse(self, transcript: str, context: CallContext) -> CallAnalysis:
        try:
            completion = self._client.chat.completions.parse(
                model=self._model,
                messages=[
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": build_user_message(transcript, context)},
                ],
                response_format=CallAnalysis,
            )
        except openai.LengthFinishReasonError:
            raise TransientError("analysis answer was cut off (length limit)") from None
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "answer"
            raise TransientError(f"analysis answer failed validation: {where}: {first['msg']}") from None
        except openai.OpenAIError as exc:
            raise map_openai_error(exc, "analysis", self._model) from None
        message = completion.choices[0].message
        if message.refusal:
            raise PermanentError(f"analysis model refused: {message.refusal[:200]}")
        if message.parsed is None:
            raise TransientError("analysis answer is empty")
        return message.parsed
