"""Seeded call history for the BI tests and benchmarks/export.py: analysed calls of three
managers over several weeks (rubric verdicts, objections, next steps, usage rows), and
missed calls, some returned within the SLA, some late, some never.

Rows are written in bulk (one transaction per page) and the BI tables are filled by the real
code (`store.bi.backfill`), so seeding 100,000 calls takes seconds, not hours."""

from __future__ import annotations

from collections.abc import Iterator

import peewee

from salesbot_poller.domain import CallAnalysis, NextStep, ObjectionHandling, RubricResult
from salesbot_poller.store import BiCall, Call, Store, Usage
from salesbot_poller.store import bi as store_bi
from salesbot_poller.trackers import Hit

MANAGERS = {555: "Иван Петров", 556: "Мария Сидорова", 557: "Олег Кузнецов"}
ITEMS = [
    ("greeting", "Приветствие", 1.0),
    ("needs", "Выявление потребности", 2.0),
    ("offer", "Презентация", 2.0),
    ("close", "Договорённость о следующем шаге", 1.0),
]
VERDICTS = ("done", "partly", "missed", "done", "not_applicable", "missed", "done")
PAGE = 1000


def analysis(n: int) -> CallAnalysis:
    """The analysis of the n-th seeded call: varied, deterministic, with Cyrillic text."""
    rubric = [
        RubricResult(
            item_id=item_id,
            title=title,
            weight=weight,
            verdict=VERDICTS[(n + k * 3) % len(VERDICTS)],
            evidence=f"цитата {n}-{k}",
            confidence=0.8,
            verified=(n + k) % 3 != 0,
            at=10 * k,
        )
        for k, (item_id, title, weight) in enumerate(ITEMS)
    ]
    objections = [ObjectionHandling(objection="Дорого", handling="Предложил рассрочку")] if n % 3 == 0 else []
    if n % 5 == 0:
        objections.append(ObjectionHandling(objection="Подумаю", handling=""))
    step = NextStep(action=f"Перезвонить; КП №{n}", due_date="2026-12-01") if n % 2 == 0 else None
    return CallAnalysis(
        summary=f"Разговор {n}",
        topic="цена",
        rubric=rubric,
        objections=objections,
        next_step=step,
        score=(n * 37) % 101,
    )


def _call(n: int, at: int, **fields: object) -> dict[str, object]:
    manager = 555 + n % 3
    return {
        "event_id": f"seed-{n}",
        "direction": "in",
        "entity_type": "leads" if n % 4 else "contacts",
        "entity_id": 7000 + n % 997,
        "note_id": 100_000 + n,
        "event_created_at": at,
        "first_seen_at": at,
        "updated_at": at + 120,
        "stage": "notified",
        "kind": "conversation",
        "duration": 60 + n % 300,
        "phone": f"+7999{n:07d}",
        "responsible_user_id": manager,
        "manager_name": MANAGERS[manager],
        "entity_name": f"ООО Ромашка-{n}",
    } | fields


def seed_analysed(store: Store, count: int, start: int, spacing: int = 600, first: int = 0) -> None:
    """`count` analysed calls, one every `spacing` seconds from `start`, with their usage rows
    and BI rows. `first`: the number of the first call (to seed more later)."""

    def rows() -> Iterator[list[dict[str, object]]]:
        batch: list[dict[str, object]] = []
        for n in range(first, first + count):
            batch.append(_call(n, start + (n - first) * spacing, analysis_json=analysis(n).model_dump_json()))
            if len(batch) == PAGE:
                yield batch
                batch = []
        if batch:
            yield batch

    for batch in rows():
        with store.db.atomic():
            for chunk in peewee.chunked(batch, 50):
                Call.insert_many(chunk).execute()
            ids: dict[str, int] = dict(
                Call.select(Call.event_id, Call.id)  # type: ignore[arg-type]
                .where(Call.event_id.in_([row["event_id"] for row in batch]))
                .tuples()
            )
            usage = []
            for row in batch:
                at = int(str(row["updated_at"]))
                call_id = ids[str(row["event_id"])]
                usage += [
                    {
                        "call_id": call_id,
                        "at": at,
                        "kind": "transcription",
                        "model": "whisper-1",
                        "audio_seconds": float(str(row["duration"])),
                    },
                    {
                        "call_id": call_id,
                        "at": at,
                        "kind": "analysis",
                        "model": "gpt-4o-mini",
                        "input_tokens": 3000,
                        "output_tokens": 600,
                    },
                ]
            for chunk in peewee.chunked(usage, 50):
                Usage.insert_many(chunk).execute()
    with store.db.atomic():
        store_bi.backfill()


def seed_missed(store: Store, start: int, sla_minutes: int = 15) -> None:
    """Six missed incoming calls an hour apart from `start`: two returned within the SLA, two
    returned late, two never returned."""
    with store.db.atomic():
        for k in range(6):
            at = start + k * 3600
            missed = Call.create(**_call(900_000 + k, at, kind="missed", stage="missed_alerted", duration=0))
            if k < 4:
                delay = (sla_minutes - 5 if k < 2 else sla_minutes + 30) * 60
                back = Call.create(**_call(900_100 + k, at + delay, direction="out", stage="skipped"))
                Call.update(callback_call_id=back.id).where(Call.id == missed.id).execute()


def seed_trackers(store: Store) -> tuple[int, int]:
    """Tracker hits and misses for the analysed calls seeded (through `Store.replace_trackers`,
    which keeps `bi_call`'s counts): "Конкурент" in every 4th call, "Скидка" twice in every
    5th, the expected "Запись разговора" not said in every 7th. Returns (hits, misses)."""
    hits = misses = 0
    with store.db.atomic():
        for fact in BiCall.select(BiCall.call_id).order_by(BiCall.call_id):
            call_id = int(fact.call_id)
            found = [Hit("Конкурент", "client", "у конкурентов дешевле", 12)] if call_id % 4 == 0 else []
            found += [Hit("Скидка", "client", "скидку", 30), Hit("Скидка", "client", "скидка", 40)] * (call_id % 5 == 0)
            missing = ["Запись разговора"] if call_id % 7 == 0 else []
            store.replace_trackers(call_id, found, missing)
            hits, misses = hits + len(found), misses + len(missing)
    return hits, misses
