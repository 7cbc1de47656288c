"""A team's calls of several weeks, stored as the pipeline would have stored them: the data
behind `demo --weekly` (the weekly report, its chart) and the tests of reports and commands.

Contract:
- `store_calls(store, calls, now)` records each `TeamCall` through the store (as an event,
  then the fields the stages would have written: note, transcript, analysis with the score
  computed from the verdicts by `rubric.total_score`, delivery state) and returns their ids,
  in order. A missed call `returned_by` another one's index gets that call as its callback.
- `demo_team(now, tz)`: eight weeks of four managers (the last week the one before `now`'s),
  deterministic: the same `now` gives the same calls.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, tzinfo

from salesbot_poller.config import DEFAULT_RUBRIC
from salesbot_poller.domain import CallAnalysis, CallEvent, ObjectionHandling, RubricResult, Stage, local_time
from salesbot_poller.services.rubric import total_score
from salesbot_poller.store import Store


@dataclass(frozen=True)
class TeamCall:
    at: int  # unix time
    manager: str
    user_id: int
    duration: int = 0  # 0: a missed incoming call
    verdicts: dict[str, str] = field(default_factory=dict)  # rubric item id -> verdict (answered calls)
    objections: tuple[str, ...] = ()
    transcript: str = ""
    phone: str = "+79990000000"
    client: str = "ООО Ромашка"
    returned_by: int | None = None  # index (in the list given) of the call that returned this missed one
    direction: str = "in"


def analysis_of(call: TeamCall) -> CallAnalysis:
    results = [
        RubricResult(item_id=item.id, title=item.title, weight=item.weight, verdict=call.verdicts[item.id])
        for item in DEFAULT_RUBRIC
        if item.id in call.verdicts
    ]
    return CallAnalysis(
        summary="Демо-звонок.",
        topic="поставка",
        rubric=results,
        objections=[ObjectionHandling(objection=o, handling="") for o in call.objections],
        score=total_score(results),
    )


def store_calls(store: Store, calls: list[TeamCall], now: int) -> list[int]:
    """See the module contract."""
    events = [
        CallEvent(
            f"team-{c.at}-{c.user_id}-{n}", "in" if c.direction == "in" else "out", "leads", 7000 + n, 100 + n, c.at
        )
        for n, c in enumerate(calls)
    ]
    store.record_window(events, [], store.cursor() or now, now)
    ids: list[int] = []
    for event, call in zip(events, calls, strict=True):
        row = store.call_by_event(event.event_id)
        assert row is not None  # recorded just above
        fields: dict[str, object] = {
            "duration": call.duration,
            "phone": call.phone,
            "call_status": 4 if call.duration else 6,
            "responsible_user_id": call.user_id,
            "manager_name": call.manager,
            "entity_name": call.client,
            "kind": "conversation" if call.duration else "missed",
            "stage": Stage.NOTIFIED if call.duration else Stage.MISSED_ALERTED,
        }
        if call.duration and call.verdicts:
            fields["transcript"] = call.transcript or "Менеджер: Добрый день! Клиент: Здравствуйте."
            fields["analysis_json"] = analysis_of(call).model_dump_json()
        store.update(row, now, **fields)
        ids.append(row.id)
    for n, call in enumerate(calls):
        if call.returned_by is not None:
            row = store.call_by_event(events[n].event_id)
            assert row is not None
            store.update(row, now, callback_call_id=ids[call.returned_by])
    return ids


MANAGERS = {501: "Иван Петров", 502: "Мария Соколова", 503: "Олег Смирнов", 504: "Анна Кузнецова"}
# How often each manager does each rubric item (0..1): a profile, so the chart has shapes.
SKILL = {
    501: {"greeting": 0.95, "needs": 0.7, "presentation": 0.8, "objections": 0.35, "next_step": 0.6, "closing": 0.7},
    502: {"greeting": 0.9, "needs": 0.85, "presentation": 0.85, "objections": 0.7, "next_step": 0.8, "closing": 0.8},
    503: {"greeting": 0.8, "needs": 0.4, "presentation": 0.6, "objections": 0.3, "next_step": 0.35, "closing": 0.6},
    504: {"greeting": 0.9, "needs": 0.6, "presentation": 0.7, "objections": 0.45, "next_step": 0.7, "closing": 0.5},
}
TREND = {501: 0.03, 502: 0.0, 503: 0.05, 504: -0.02}  # per week: who is getting better
OBJECTIONS = (
    "Дорого",
    "У конкурентов дешевле",
    "Нет бюджета в этом квартале",
    "Надо посоветоваться с директором",
    "Я подумаю",
    "Сроки поставки слишком долгие",
    "Уже работаем с другим поставщиком",
    "Пришлите КП на почту, посмотрим",
)
TRANSCRIPTS = (
    "Менеджер: Добрый день, компания «Склад-Про». Клиент: Нам нужны стеллажи, но у конкурентов дешевле.",
    "Менеджер: Здравствуйте! Клиент: Хотим паллетные стеллажи на склад, какие сроки поставки?",
    "Менеджер: Добрый день. Клиент: Дорого, нет бюджета в этом квартале, давайте позже.",
    "Менеджер: Алло, это по поводу мезонина. Клиент: Пришлите коммерческое предложение на почту.",
)


def demo_team(now: int, tz: tzinfo | None) -> list[TeamCall]:
    """See the module contract."""
    rng = random.Random(now // 86400)
    today = local_time(now, tz).date()
    last_monday = today - timedelta(days=today.weekday() + 7)
    calls: list[TeamCall] = []
    for week in range(8):
        monday = last_monday - timedelta(days=7 * (7 - week))
        for user, name in MANAGERS.items():
            for n in range(rng.randint(6, 10)):
                day = monday + timedelta(days=rng.randint(0, 4))
                moment = datetime.combine(day, time(9 + rng.randint(0, 8), rng.randint(0, 59)), tz)
                at = int((moment if tz else moment.astimezone()).timestamp())
                skill = {k: min(0.98, max(0.05, v + TREND[user] * (week - 4))) for k, v in SKILL[user].items()}
                verdicts = {
                    item: "done" if (roll := rng.random()) < share else "partly" if roll < share + 0.15 else "missed"
                    for item, share in skill.items()
                }
                objections = tuple(rng.sample(OBJECTIONS, rng.randint(0, 2)))
                phone = f"+7999{user}{week}{n:03d}"
                calls.append(
                    TeamCall(at, name, user, rng.randint(60, 600), verdicts, objections, rng.choice(TRANSCRIPTS), phone)
                )
            for n in range(rng.randint(0, 3)):
                at = calls[-1].at + 600 * (n + 1)
                missed = TeamCall(at, name, user, phone=f"+7998{user}{week}{n:03d}")
                calls.append(missed)
                if rng.random() < 0.6:  # returned by a short outgoing call an hour later
                    back = TeamCall(at + 3600, name, user, 45, {}, (), "", missed.phone, direction="out")
                    calls.append(back)
                    calls[-2] = TeamCall(**{**missed.__dict__, "returned_by": len(calls) - 1})
    return calls
