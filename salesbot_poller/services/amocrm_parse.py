"""Parsing amoCRM's call events and call notes into typed values.

Malformed input never raises anything but `ValueError`, whose text names the bad field.
"""

from __future__ import annotations

from typing import Any

from salesbot_poller.domain import ENTITY_PLURAL, CallEvent, CallNote, Direction

CALL_EVENT_TYPES: dict[str, Direction] = {"incoming_call": "in", "outgoing_call": "out"}


def parse_event(raw: Any) -> CallEvent:
    """Validate one raw event; raise ValueError naming the bad field."""
    if not isinstance(raw, dict):
        raise ValueError("event is not an object")
    event_id = raw.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("field 'id' is missing or not a string")
    direction = CALL_EVENT_TYPES.get(raw.get("type"))  # type: ignore[arg-type]
    if direction is None:
        raise ValueError(f"field 'type' is {raw.get('type')!r}, not a call event")
    plural = ENTITY_PLURAL.get(raw.get("entity_type"))  # type: ignore[arg-type]
    if plural is None:
        raise ValueError(f"field 'entity_type' is {raw.get('entity_type')!r}")
    entity_id, created_at = raw.get("entity_id"), raw.get("created_at")
    if not isinstance(entity_id, int) or isinstance(entity_id, bool):
        raise ValueError("field 'entity_id' is missing or not an integer")
    if not isinstance(created_at, int) or isinstance(created_at, bool):
        raise ValueError("field 'created_at' is missing or not an integer")
    try:
        note_id = raw["value_after"][0]["note"]["id"]
    except (KeyError, IndexError, TypeError):
        raise ValueError("field 'value_after[0].note.id' is missing") from None
    if not isinstance(note_id, int) or isinstance(note_id, bool):
        raise ValueError("field 'value_after[0].note.id' is not an integer")
    return CallEvent(event_id, direction, plural, entity_id, note_id, created_at)


def _optional_int(value: Any, field: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"field 'params.{field}' is {value!r}, not a number") from None


def parse_note(raw: Any) -> CallNote:
    """Validate one raw call note; raise ValueError naming the bad field."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), int):
        raise ValueError("note has no integer 'id'")
    if raw.get("note_type") not in ("call_in", "call_out"):
        raise ValueError(f"field 'note_type' is {raw.get('note_type')!r}, not call_in/call_out")
    params = raw.get("params")
    if not isinstance(params, dict):
        raise ValueError("field 'params' is missing")
    duration = _optional_int(params.get("duration"), "duration")
    link = params.get("link")
    responsible = params.get("call_responsible")
    return CallNote(
        note_id=raw["id"],
        duration=duration or 0,
        phone=str(params.get("phone") or ""),
        link=link.strip() if isinstance(link, str) and link.strip() else None,
        call_status=_optional_int(params.get("call_status"), "call_status"),
        source=str(params.get("source") or ""),
        responsible_user_id=_optional_int(raw.get("responsible_user_id"), "responsible_user_id"),
        call_responsible=None if responsible in (None, "") else str(responsible),
    )
