"""amoCRM write-back (opt-in): what is written to the call's lead or contact.

Contract of `plan_writes(config, call, analysis, tz)`:
- with `amocrm.write_back`: a `common` note on the call's entity (lead, contact, company or
  customer: where amoCRM attached the call) with the score, summary and next step;
- with `amocrm.create_tasks` too, and only when a next step was agreed: a task on the same
  entity for the call's responsible user, due at the end of the named day (23:59 in the
  account's time zone), or at the end of the day after the call when no day was named.
Both go through `delivery` (stored before posting, the created id recorded right after).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

from salesbot_poller.config import Config
from salesbot_poller.domain import CallAnalysis, Planned, local_time
from salesbot_poller.store import Call

NOTE_LIMIT = 4000  # amoCRM notes take more, but a card-sized note is what people read
TASK_TYPE_CALL = 1  # amoCRM's built-in "Связаться" (follow up) task type


def note_text(analysis: CallAnalysis) -> str:
    score = "—" if analysis.score is None else f"{analysis.score}/100"
    lines = [f"SalesBot: разбор звонка, оценка {score}", "", f"Итог: {analysis.summary.strip()}"]
    step = analysis.next_step
    if step and step.action.strip():
        due = f" (до {date.fromisoformat(step.due_date):%d.%m.%Y})" if step.due_date else ""
        lines.append(f"Следующий шаг: {step.action.strip()}{due}")
    else:
        lines.append("Следующий шаг: не договорились")
    missed = [r.title for r in analysis.rubric if r.verdict == "missed"]
    if missed:
        lines.append(f"Не выполнено по скрипту: {', '.join(missed)}")
    return "\n".join(lines)[:NOTE_LIMIT]


def due_timestamp(due_date: str | None, call_time: int, tz: tzinfo | None) -> int:
    """23:59 of `due_date`, else of the day after the call, in `tz` (None: server's zone)."""
    called = local_time(call_time, tz)
    day = date.fromisoformat(due_date) if due_date else called.date() + timedelta(days=1)
    end = datetime.combine(day, time(23, 59), called.tzinfo)
    return int(end.timestamp())


def plan_writes(config: Config, call: Call, analysis: CallAnalysis, tz: tzinfo | None) -> list[Planned]:
    """See the module contract."""
    if not config.amocrm.write_back:
        return []
    entity = {"entity_id": call.entity_id}
    note: dict[str, Any] = {**entity, "note_type": "common", "params": {"text": note_text(analysis)}}
    plans = [
        Planned(
            f"call:{call.id}:amo_note", "amo_note", None, {"path": f"/api/v4/{call.entity_type}/notes", "body": [note]}
        )
    ]
    step = analysis.next_step
    if config.amocrm.create_tasks and step and step.action.strip():
        task: dict[str, Any] = {
            **entity,
            "entity_type": call.entity_type,
            "text": f"{step.action.strip()} (договорились в звонке, SalesBot)",
            "complete_till": due_timestamp(step.due_date, call.event_created_at, tz),
            "task_type_id": TASK_TYPE_CALL,
        }
        if call.responsible_user_id:
            task["responsible_user_id"] = call.responsible_user_id
        plans.append(Planned(f"call:{call.id}:amo_task", "amo_task", None, {"path": "/api/v4/tasks", "body": [task]}))
    return plans
