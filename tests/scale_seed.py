"""A large call history for benchmarks/scale.py: `seed(store, calls)` writes `calls` calls
spread over the two years before `END`, through the store's bulk path
(`Store.insert_calls_bulk`: call rows and their BI rows as `update` writes them), with the
delivery and usage rows the pipeline would have left.

Deterministic: call n (from 0) is the same in every run. In each block of ten calls:
- 0: a missed incoming call, returned by call 1 (an outgoing call to the same number);
- 2: a missed incoming call nobody returned (its escalation sent);
- 9: an answered call too short to analyse (skipped);
- the others: analysed conversations (transcript of 2-5 KB of Russian words, an analysis
  with rubric items, quotes, objections and a next step), their card sent.
So 20% missed and 70% analysed. Managers: 20. Calls older than `CLEARED_DAYS` have had their
personal data removed (as retention with a 365-day setting would have left them); those
between `retention_days` and `CLEARED_DAYS` old are the backlog of a shorter setting. A few
calls failed (status lists them). `RARE_WORD` is said in about ten recent transcripts (`/find`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import peewee

from salesbot_poller.domain import CallAnalysis, NextStep, ObjectionHandling, RubricResult, without_personal_data
from salesbot_poller.phones import key
from salesbot_poller.pipeline import catchup
from salesbot_poller.store import Delivery, Store, Usage
from salesbot_poller.store.base import CURSOR_KEY, insert_rows

VERSION = 2  # bump when the seeded rows change: cached databases of another version are reseeded
MARKER_KEY = "scale_seed"  # State: "<VERSION>:<calls>" once seeding has finished
END = 1_796_029_200  # 2026-11-30 09:00 UTC, a Monday: the benchmark's "now"
SPAN = 2 * 365 * 86400  # the history's length
CLEARED_DAYS = 365
PAGE = 5_000  # calls per transaction
RARE_WORD = "эскалатор"
_NAMES = (
    "Иван Петров,Мария Сидорова,Олег Кузнецов,Анна Смирнова,Павел Орлов,Елена Волкова,Сергей Лебедев,"
    "Ольга Новикова,Дмитрий Козлов,Татьяна Морозова,Алексей Соколов,Наталья Попова,Андрей Васильев,"
    "Ирина Фёдорова,Михаил Зайцев,Светлана Павлова,Николай Семёнов,Юлия Голубева,Виктор Виноградов,"
    "Ксения Богданова"
)
MANAGERS = {1000 + k: name for k, name in enumerate(_NAMES.split(","))}
ITEMS = [
    ("greeting", "Приветствие", 1.0),
    ("needs", "Выявление потребности", 2.0),
    ("offer", "Презентация", 2.0),
    ("objections", "Работа с возражениями", 1.5),
    ("close", "Договорённость о следующем шаге", 1.0),
]
VERDICTS = ("done", "partly", "missed", "done", "not_applicable", "missed", "done")
TOPICS = ("Цена", "Доставка", "Сроки", "Монтаж", "Гарантия")
_WORDS = (
    "добрый день компания склад стеллажи доставка цена скидка монтаж гарантия договор счёт оплата "
    "менеджер клиент заказ поставка сроки объём размер высота нагрузка металл покраска сборка замер "
    "офис адрес завтра неделя месяц рассрочка предоплата коммерческое предложение расчёт вариант "
    "паллет полка ярус проход погрузчик сертификат качество конкурент дешевле дороже подумаю согласую "
    "руководитель бухгалтерия почта телефон перезвоню удобно хорошо понятно конечно спасибо пожалуйста"
)
WORDS = tuple(_WORDS.split())


def _mix(n: int) -> int:
    """A cheap deterministic hash of n (Knuth's multiplicative), 32 bits."""
    return (n * 2_654_435_761) & 0xFFFF_FFFF


def _sentence(k: int) -> str:
    words = [WORDS[(_mix(k) >> (j % 24) ^ (k * 31 + j * 7)) % len(WORDS)] for j in range(12)]
    return " ".join(words).capitalize() + "."


SENTENCES = tuple(_sentence(k) for k in range(4096))  # ~100 characters each, built once


def transcript(n: int, rare: bool) -> str:
    """2-5 KB of Russian: 11 to 26 speaker lines of words from `WORDS`, varied by n."""
    h = _mix(n)
    lines = [SENTENCES[(h + k * 40_503) % len(SENTENCES)] for k in range(11 + h % 16)]
    if rare:
        lines[3] = lines[3].replace(" ", f" {RARE_WORD} ", 1)
    return "\n".join(("Менеджер: " if k % 2 == 0 else "Клиент: ") + line for k, line in enumerate(lines))


def analysis(n: int) -> CallAnalysis:
    """The analysis of call n: five rubric items with quotes, objections, a next step."""
    rubric = [
        RubricResult(
            item_id=item_id,
            title=title,
            weight=weight,
            verdict=VERDICTS[(n + k * 3) % len(VERDICTS)],
            evidence=f"{WORDS[(n + k) % len(WORDS)]} {WORDS[(n * 3 + k) % len(WORDS)]}",
            confidence=0.8,
            verified=(n + k) % 3 != 0,
            at=15 * k,
        )
        for k, (item_id, title, weight) in enumerate(ITEMS)
    ]
    objections = [ObjectionHandling(objection="Дорого", handling="Предложил рассрочку")] if n % 3 == 0 else []
    if n % 7 == 0:
        objections.append(ObjectionHandling(objection="Подумаю", handling=""))
    step = NextStep(action=f"Выслать КП №{n}", due_date="2026-12-01") if n % 2 == 0 else None
    return CallAnalysis(
        summary=f"Клиент спросил про {WORDS[n % len(WORDS)]}; менеджер рассказал про {WORDS[(n + 5) % len(WORDS)]}.",
        topic=TOPICS[n % len(TOPICS)],
        topic_closed=True,
        rubric=rubric,
        client_needs=["стеллажи на склад"],
        objections=objections,
        next_step=step,
        score=(n * 37) % 101,
    )


def event_time(n: int, calls: int) -> int:
    return END - SPAN + (n * SPAN) // calls + 30


def _row(n: int, calls: int, rare_step: int) -> dict[str, Any]:
    """Call n's columns (every row the same names, as `insert_calls_bulk` wants)."""
    at = event_time(n, calls)
    position = n % 10
    manager = 1000 + _mix(n // 10) % len(MANAGERS)
    missed = position in (0, 2)
    phone = f"+7999{(n // 10) % 10_000_000:07d}" if position in (0, 1) else f"+7916{n % 10_000_000:07d}"
    analysed = not missed and position != 9
    cleared = at < END - CLEARED_DAYS * 86400
    rare = analysed and not cleared and n % rare_step == 3
    text = transcript(n, rare) if analysed else None
    stored = analysis(n).model_dump_json() if analysed else None
    row: dict[str, Any] = {
        "id": n + 1,  # known ahead, so a missed call can name its callback (ids of a fresh database)
        "event_id": f"scale-{n}",
        "direction": "out" if position in (1, 5, 7) else "in",
        "entity_type": "leads" if n % 4 else "contacts",
        "entity_id": 5_000_000 + (n // 10) % 50_000,
        "note_id": 90_000_000 + n,
        "event_created_at": at,
        "first_seen_at": at + 20,
        "updated_at": at + 300,
        "stage": "missed_alerted" if missed else ("skipped" if position == 9 else "notified"),
        "kind": "missed" if missed else "conversation",
        "attempts": 0 if missed else 1,
        "last_error": None,
        "skip_reason": "call shorter than poller.min_call_seconds" if position == 9 else None,
        "duration": 0 if missed else (8 if position == 9 else 60 + _mix(n) % 900),
        "phone": phone,
        "phone_key": key(phone),  # as intake writes it
        "link": f"https://records.example.ru/{n}.mp3" if not missed else None,
        "call_status": 6 if missed else 4,
        "source": "telephony",
        "responsible_user_id": manager,
        "manager_name": MANAGERS[manager],
        "entity_name": f"ООО Склад-{(n // 10) % 50_000}",
        "profile": "",
        "transcript": text,
        "analysis_json": stored,
        "notified_at": at + 300,
        "chat_id": "-100",
        "callback_call_id": n + 2 if position == 0 else None,
        "personal_removed_at": None,
    }
    if n % 9_973 == 5 and not missed:  # a few failed calls (status lists them)
        row |= {"stage": "failed", "last_error": "openai: 500 Internal Server Error", "notified_at": None}
    if cleared:  # as `Store.clear_personal` leaves a call
        row |= {
            "transcript": None,
            "link": None,
            "phone": None,
            "phone_key": None,
            "entity_name": None,
            "analysis_json": without_personal_data(stored),
            "personal_removed_at": at + CLEARED_DAYS * 86400,
        }
    return row


def _deliveries(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The sent messages of a call: its card or alert, and a missed call's escalation."""
    if row["stage"] not in ("notified", "missed_alerted"):
        return []
    own = "alert" if row["kind"] == "missed" else "card"
    text = f"📞 {row['manager_name']} · {row['entity_name']} · {row['phone']} · " + "оценка, цитаты, шаг " * 10
    kinds = [(f"call:{row['id']}", own)]
    if row["kind"] == "missed" and row["callback_call_id"] is None:
        kinds.append((f"call:{row['id']}:escalation", "escalation"))
    removed = row["personal_removed_at"]
    payload = json.dumps({"parts": [] if removed else [text], "deleted": [], "refused": []}, ensure_ascii=False)
    return [
        {
            "key": key,
            "call_id": row["id"],
            "kind": kind,
            "chat_id": "-100",
            "thread_id": None,
            "reply_to_key": None if kind == own else f"call:{row['id']}",
            "payload_json": payload,
            "sent_ids_json": json.dumps([row["id"] * 2 + i]),
            "created_at": row["updated_at"],
            "done_at": row["updated_at"] + 2,
            "removed_at": removed,
        }
        for i, (key, kind) in enumerate(kinds)
    ]


def _usage(row: dict[str, Any]) -> list[dict[str, Any]]:
    if row["analysis_json"] is None:
        return []
    return [
        {
            "call_id": row["id"],
            "at": row["updated_at"],
            "kind": "transcription",
            "model": "whisper-1",
            "audio_seconds": float(row["duration"]),
            "input_tokens": 0,
            "output_tokens": 0,
        }
    ]


def pages(calls: int) -> Iterator[list[dict[str, Any]]]:
    """The rows of `calls` calls, `PAGE` at a time."""
    rare_step = max(10, calls // 20 // 10 * 10)  # ~10 hits in the newest half
    for first in range(0, calls, PAGE):
        yield [_row(n, calls, rare_step) for n in range(first, min(calls, first + PAGE))]


def seeded(store: Store) -> int | None:
    """How many calls a finished seeding of this `VERSION` wrote into `store`; None: none did."""
    raw = store.get_state(MARKER_KEY)
    if not raw or not raw.startswith(f"{VERSION}:"):
        return None
    return int(raw.split(":", 1)[1])


def seed(store: Store, calls: int, progress: Any = None) -> None:
    """Write `calls` calls into `store`'s empty database (see the module docstring), one
    transaction per `PAGE`, then mark it seeded (`seeded`). `progress(done)` after each page."""
    done = 0
    for rows in pages(calls):
        with store.db.atomic():
            store.insert_calls_bulk(rows, END)
            for model, extra in ((Delivery, _deliveries), (Usage, _usage)):
                found = [item for row in rows for item in extra(row)]
                insert_rows(store.db, model, found)
        done += len(rows)
        if progress is not None:
            progress(done)
    if isinstance(store.db, peewee.PostgresqlDatabase):
        # Ids were given explicitly: the sequence must continue after them.
        store.db.execute_sql("SELECT setval(pg_get_serial_sequence('call', 'id'), (SELECT MAX(id) FROM call))")  # type: ignore[no-untyped-call]
    moment = str(END)
    store.set_state(catchup.FIRST_START_KEY, str(END - SPAN - 86400))  # a daemon running all along
    store.set_state(CURSOR_KEY, moment)
    store.set_state(MARKER_KEY, f"{VERSION}:{calls}")
