"""What the sandbox servers say: one account, two calls, a transcript and an analysis.

`canned_answer()` is the one place the demo's analysis is built, as the JSON the chat model
answers; `canned_analysis()` reads it the way the analyser does (`answer_reader`, `rubric`,
`check_quotes`), so a change to the answer's form shows up here first.
"""

from __future__ import annotations

import io
import json
import struct
import wave
from typing import Any

from salesbot_poller.config import DEFAULT_RUBRIC
from salesbot_poller.domain import CallAnalysis
from salesbot_poller.services.analysis import check_quotes
from salesbot_poller.services.answer_reader import read_answer
from salesbot_poller.services.rubric import to_analysis

ACCOUNT = {"id": 30000001, "name": "Демо-компания", "subdomain": "demo"}
USERS = {501: "Иван Петров", 502: "Мария Соколова"}
LEADS = {7001: "ООО «Ромашка»: поставка стеллажей", 7002: "ИП Кузнецов: мезонин на склад"}
CONTACTS = {8001: "Анна Смирнова", 8002: "Олег Иванов"}
GROUPS = {0: "Отдел продаж"}
PIPELINES = {
    3001: ("Продажи", {30011: "Первичный контакт", 142: "Успешно реализовано", 143: "Закрыто и не реализовано"}),
}

# (event id, direction, entity type (singular), entity id, note id, seconds before now,
#  note params); the answered call's recording is served by the amoCRM sandbox itself.
ANSWERED_SECONDS = 125
CALLS: list[tuple[str, str, str, int, int, int, dict[str, Any]]] = [
    ("01JDEMO0000000000000000001", "incoming_call", "lead", 7001, 9101, 900,
     {"duration": ANSWERED_SECONDS, "phone": "+79991110001", "call_status": 4, "source": "DemoPBX",
      "responsible": 501, "recording": "rec-9101.wav"}),
    ("01JDEMO0000000000000000002", "incoming_call", "contact", 8001, 9102, 600,
     {"duration": 0, "phone": "+79991110004", "call_status": 6, "source": "DemoPBX",
      "responsible": 502, "recording": None}),
]  # fmt: skip

# The calls `demo --serve` adds while it runs, in turn: (direction, entity type, entity id,
# duration (0: missed), amoCRM call_status, responsible user).
LIVE_CALLS: list[tuple[str, str, int, int, int, int]] = [
    ("incoming_call", "lead", 7001, ANSWERED_SECONDS, 4, 501),
    ("incoming_call", "contact", 8001, 0, 6, 502),
    ("outgoing_call", "lead", 7002, 95, 4, 502),
    ("incoming_call", "lead", 7002, 187, 4, 501),
    ("incoming_call", "contact", 8002, 0, 6, 501),
]

TRANSCRIPT = (
    "Менеджер: Компания «Склад-Про», Иван, добрый день! "
    "Клиент: Здравствуйте. Мы расширяем склад и ищем стеллажи, вы ставите до конца месяца? "
    "Менеджер: Да, по Москве монтаж за две недели. Какая высота потолков и какой вес на полку? "
    "Клиент: Потолки шесть метров, паллеты до тонны. Но у конкурентов дешевле процентов на десять. "
    "Менеджер: Понимаю. У нас в цену входит монтаж и гарантия пять лет, а доставку могу дать бесплатно. "
    "Клиент: Хорошо, пришлите коммерческое предложение, посмотрим. "
    "Менеджер: Отправлю до пятницы и позвоню в понедельник, чтобы обсудить."
)


def canned_answer() -> dict[str, Any]:
    """The answer the OpenAI sandbox gives every analysis request, in the answer schema of
    the default rubric (the demo runs with the default config)."""
    verdicts = {
        "greeting": ("done", "Компания «Склад-Про», Иван, добрый день!"),
        "needs": ("done", "Какая высота потолков и какой вес на полку?"),
        "presentation": ("done", "в цену входит монтаж и гарантия пять лет"),
        "objections": ("partly", "доставку могу дать бесплатно"),
        "next_step": ("done", "Отправлю до пятницы и позвоню в понедельник"),
        "closing": ("missed", ""),
    }
    return {
        "summary": (
            "Клиент расширяет склад и ищет паллетные стеллажи под потолок 6 м с поставкой до конца месяца. "
            "Менеджер выяснил нагрузку, ответил на возражение о цене и договорился отправить КП."
        ),
        "topic": "стеллажи",
        "rubric": {
            item.id: {"verdict": verdicts[item.id][0], "evidence": verdicts[item.id][1], "confidence": 0.9}
            for item in DEFAULT_RUBRIC
        },
        "client_needs": ["Стеллажи под потолок 6 м, паллеты до 1 т", "Поставка и монтаж до конца месяца"],
        "objections": [{"objection": "У конкурентов дешевле на 10%", "handling": "Монтаж, гарантия, доставка"}],
        "next_step": {"action": "Отправить КП, созвониться в понедельник", "due_date": None},
        "risk_flags": ["Сравнивает с конкурентом по цене"],
        "sentiment": "positive",
    }


def canned_analysis() -> CallAnalysis:
    """What the pipeline stores from `canned_answer()`: the demo card shows this."""
    reading = read_answer(json.dumps(canned_answer(), ensure_ascii=False), tuple(i.id for i in DEFAULT_RUBRIC))
    return check_quotes(to_analysis(reading, DEFAULT_RUBRIC), TRANSCRIPT)


def make_wav(seconds: int, rate: int = 8000) -> bytes:
    """A mono 16-bit WAV of `seconds`: half-second tones and pauses, like two people talking."""
    tone_a = _square_period(rate // 400) * (rate // 2 // (rate // 400))  # 0.5 s at 400 Hz
    tone_b = _square_period(rate // 250) * (rate // 2 // (rate // 250))  # 0.5 s at 250 Hz
    pause = b"\x00\x00" * (rate // 4)
    pattern = tone_a + pause + tone_b + pause  # 1.5 s
    frames = (pattern * (seconds * 2 // 3 + 1))[: seconds * rate * 2]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return buffer.getvalue()


def _square_period(samples: int, amplitude: int = 6000) -> bytes:
    half = samples // 2
    return struct.pack(f"<{samples}h", *([amplitude] * half + [-amplitude] * (samples - half)))


# The weekly report's objection grouping: the sandbox groups by these stems (any other: "Другое").
OBJECTION_STEMS = {
    "Цена и бюджет": ("дорог", "дешевл", "бюджет", "цен"),
    "Нужно подумать, согласовать": ("подума", "посовет", "директор", "кп", "почту"),
    "Сроки поставки": ("срок", "долг"),
    "Уже есть поставщик": ("поставщик", "работаем"),
}


def canned_grouping(user_message: str) -> dict[str, Any]:
    """The sandbox's answer to the weekly grouping request (`services.objection_groups`): the
    numbered objections grouped by `OBJECTION_STEMS`."""
    groups: dict[str, list[int]] = {}
    for line in user_message.splitlines():
        number, dot, text = line.partition(". ")
        if not dot or not number.isdigit():
            continue
        title = next((t for t, stems in OBJECTION_STEMS.items() if any(s in text.lower() for s in stems)), "Другое")
        groups.setdefault(title, []).append(int(number))
    return {"groups": [{"title": title, "numbers": numbers} for title, numbers in groups.items()]}
