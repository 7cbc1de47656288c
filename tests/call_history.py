"""A long call history as a running account has it, for the query-plan test and
benchmarks/queries.py: mostly finished calls (cards sent, missed calls alerted, outgoing
calls skipped) with transcripts, analyses and their BI rows, delivery rows and seen events,
spread over `days` days; a few calls in every unfinished stage, some claimed, failed,
quarantined or cleared of personal data; set-aside events and failing destinations.

Rows are written in bulk (one transaction per page) through the models, and the BI tables
are filled by the real code (`store.bi.backfill`): 100,000 calls take well under a minute.
"""

from __future__ import annotations

from typing import Any

import peewee

from salesbot_poller.store import Call, Delivery, SeenEvent, Store
from salesbot_poller.store import bi as store_bi
from tests.bi_seed import MANAGERS, analysis

PAGE = 1000
WORDS = [
    "здравствуйте",
    "меня",
    "зовут",
    "хотел",
    "уточнить",
    "по",
    "поводу",
    "доставки",
    "в",
    "Казань",
    "цена",
    "устраивает",
    "но",
    "дороговато",
    "скидка",
    "возможна",
    "если",
    "оплатим",
    "сегодня",
    "договорились",
    "перезвоню",
    "завтра",
]
# (stage, kind, direction) of every 100 seeded calls: the unfinished ones are few, as in life.
MIX: list[tuple[str, str | None, str]] = (
    [("notified", "conversation", "in")] * 45
    + [("notified", "conversation", "out")] * 15
    + [("missed_alerted", "missed", "in")] * 15
    + [("skipped", "conversation", "out")] * 17
    + [("failed", "conversation", "in")]
    + [("quarantined", "conversation", "in")]
    + [("new", None, "in"), ("ready", "conversation", "in"), ("downloaded", "conversation", "in")]
    + [("transcribed", "conversation", "in"), ("analysed", "conversation", "in"), ("missed", "missed", "in")]
    + [("notifying", "conversation", "in")]
)


def transcript(n: int) -> str:
    """A short Russian transcript, different for each call (about 400 characters)."""
    words = [WORDS[(n * 7 + k * 3) % len(WORDS)] for k in range(48)]
    return " ".join(words) + f" заказ {n}"


UNFINISHED = {"new", "ready", "downloaded", "transcribed", "analysed", "missed", "notifying"}


def _row(n: int, at: int, now: int, prefix: str, finished: bool) -> dict[str, object]:
    stage, kind, direction = MIX[n % len(MIX)]
    if stage in UNFINISHED and (finished or at < now - 86400):  # only the last day's calls are under way
        stage = "missed_alerted" if kind == "missed" else "notified" if kind else "skipped"
    if finished and stage in ("failed", "quarantined"):
        stage = "notified"
    manager = 555 + n % 3
    talked = kind == "conversation" and stage not in ("skipped", "new")
    row: dict[str, object] = {
        "event_id": f"{prefix}-{n}",
        "direction": direction,
        "entity_type": "leads" if n % 4 else "contacts",
        "entity_id": 7000 + n % 997,
        "note_id": 100_000 + n,
        "event_created_at": at,
        "first_seen_at": at,
        "updated_at": at + 120,
        "stage": stage,
        "kind": kind,
        "duration": (60 + n % 300) if talked else 0,
        "phone": f"+7999{n % 50_000:07d}",
        "responsible_user_id": manager,
        "manager_name": MANAGERS[manager],
        "entity_name": f"ООО Ромашка-{n}",
        "profile": "",
        "next_attempt_at": at if stage not in ("ready", "downloaded") else now + 3600,
    }
    if talked and stage != "ready":
        row["transcript"] = transcript(n)
    if stage in ("notified", "analysed", "notifying", "failed"):
        row["analysis_json"] = analysis(n).model_dump_json()
    if stage in ("failed", "quarantined") or (n % 97 == 0 and not finished):
        row["last_error"] = f"ошибка {n}"
    if stage == "notifying" and n % 2:
        row |= {"claimed_by": "1:worker-1", "claimed_at": now - 10}
    return row


def _deliveries(call_id: int, row: dict[str, object], n: int, finished: bool) -> list[dict[str, object]]:
    stage = row["stage"]
    if stage not in ("notified", "missed_alerted", "notifying"):
        return []
    kind = "alert" if row["kind"] == "missed" else "card"
    done = None if stage == "notifying" else int(str(row["updated_at"]))
    rows = [
        {
            "key": f"call:{call_id}",
            "call_id": call_id,
            "kind": kind,
            "payload_json": '{"parts": ["…"]}',
            "sent_ids_json": "[1]" if done else "[]",
            "created_at": row["updated_at"],
            "done_at": done,
        }
    ]
    if n % 10 == 0:  # a copy to the alert chat; now and then a failing one
        failing = n % 1000 == 0 and not finished
        rows.append(
            rows[0]
            | {
                "key": f"call:{call_id}:alert-copy",
                "kind": "alert_copy",
                "done_at": None if failing else done,
                "error": "chat not found" if failing else None,
            }
        )
    return rows


def seed_history(
    store: Store, count: int, now: int, days: int = 180, prefix: str = "hist", finished: bool = False
) -> None:
    """`count` calls evenly spread over the `days` days before `now` (see the module docstring),
    their event ids starting with `prefix`; `finished`: none failed, no error anywhere (an
    older history, every call of it done with)."""
    spacing = max(1, days * 86400 // max(count, 1))
    start = now - count * spacing
    for first in range(0, count, PAGE):
        numbers = range(first, min(first + PAGE, count))
        rows = [_row(n, start + n * spacing, now, prefix, finished) for n in numbers]
        with store.db.atomic():
            for chunk in peewee.chunked(rows, 50):
                Call.insert_many(chunk).execute()
            ids: dict[Any, int] = dict(
                Call.select(Call.event_id, Call.id)  # type: ignore[arg-type]
                .where(Call.event_id.in_([row["event_id"] for row in rows]))
                .tuples()
            )
            events = [
                {"event_id": row["event_id"], "created_at": row["event_created_at"], "seen_at": row["first_seen_at"]}
                for row in rows
            ]
            events += [
                {"event_id": f"{prefix}-bad-{n}", "seen_at": start + n * spacing, "error": "no entity id"}
                for n in numbers
                if n % 5000 == 0 and not finished
            ]
            deliveries = [
                d
                for n, row in zip(numbers, rows, strict=True)
                for d in _deliveries(ids[row["event_id"]], row, n, finished)
            ]
            for model, batch in ((SeenEvent, events), (Delivery, deliveries)):
                for chunk in peewee.chunked(batch, 50):
                    model.insert_many(chunk).execute()
    with store.db.atomic():
        store_bi.backfill()
        # The oldest fifth was cleared by retention: no transcript, no number (the search
        # index follows through its triggers).
        seeded = Call.event_id.startswith(f"{prefix}-")
        first = Call.select(peewee.fn.MIN(Call.id)).where(seeded).scalar()
        old = seeded & (Call.id < first + count // 5)
        Call.update(personal_removed_at=now - 86400, transcript=None, phone=None).where(old).execute()


def analyze(store: Store) -> None:
    """The planner's statistics, as a database that has run for a while would have them."""
    store.db.execute_sql("ANALYZE")  # type: ignore[no-untyped-call]
