"""Parsing amoCRM's call events and call notes into typed values.

Malformed input never raises anything but `ValueError`, whose text names the bad field (and
is short: a hostile value is shown cut). What comes out is safe to store and to show:
- integers are within the range their field can have (ids fit the store's 64-bit columns, a
  duration is at most a week, a call status is a small number);
- texts have no lone surrogates (a JSON `\\ud800` that no encoder can write) and no control
  characters but tab and newline.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from salesbot_poller.domain import ENTITY_PLURAL, CallEvent, CallNote, Direction

CALL_EVENT_TYPES: dict[str, Direction] = {"incoming_call": "in", "outgoing_call": "out"}

MAX_ID = 2**63 - 1  # the store's 64-bit columns, and amoCRM's ids are far below it
MAX_DURATION = 7 * 24 * 3600  # no call lasts a week: more is a corrupt note
MAX_STATUS = 1000  # amoCRM's call_status is 1..7
MAX_EVENT_ID = 64  # amoCRM's event ids are 26-character ULIDs
SHOWN = 80  # how much of a bad value an error text shows
_NUMERIC = re.compile(r"[0-9]{1,40}")  # longer is no id: not worth converting
_UNSAFE = re.compile(r"[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(value: Any) -> str:
    """`value` as text that any encoder and database can take: lone surrogates become U+FFFD,
    control characters (but tab and newline) are dropped."""
    text = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(lambda m: "\ufffd" if "\ud800" <= m.group() <= "\udfff" else "", text)


def shown(value: Any) -> str:
    """A bad value as an error text may show it: `repr`, cleaned, cut."""
    text = clean_text(repr(value))
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


def bounded_int(value: Any, field: str, high: int = MAX_ID) -> int:
    """A JSON integer in 0..`high`; ValueError naming `field` and showing the value otherwise."""
    if value is None:
        raise ValueError(f"field '{field}' is missing")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"field '{field}' is {shown(value)}, not an integer")
    if not 0 <= value <= high:
        raise ValueError(f"field '{field}' is {shown(value)}, out of range (0..{high})")
    return value


def id_int(value: Any, field: str, high: int = MAX_ID) -> int:
    """An id or a time as amoCRM and its SDKs write it: a JSON integer, or a string of digits
    (the official PHP SDK casts both; JavaScript-side proxies send ids above 2^53 as strings),
    in 0..`high`. ValueError naming `field` and showing the value otherwise."""
    if not isinstance(value, str):
        return bounded_int(value, field, high)
    if not _NUMERIC.fullmatch(value.strip()):
        raise ValueError(f"field '{field}' is {shown(value)}, not an integer")
    if int(value) > high:
        raise ValueError(f"field '{field}' is {shown(value)}, out of range (0..{high})")
    return int(value)


def event_ref(raw: Any) -> str:
    """The id under which a malformed event is recorded: its own when usable, else a stand-in
    from a digest of the event (the same event read again is the same row, logged once)."""
    raw_id = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(raw_id, int) and not isinstance(raw_id, bool) and 0 <= raw_id <= MAX_ID:
        return str(raw_id)
    if isinstance(raw_id, str) and raw_id and len(raw_id) <= MAX_EVENT_ID:
        return clean_text(raw_id)
    try:
        text = json.dumps(raw, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        text = type(raw).__name__
    return "unknown-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:20]


MAX_RAW_EVENT = 16 * 1024  # a set-aside event larger than this is not kept for `retry --event`


def raw_text(raw: Any) -> str | None:
    """A raw event as JSON (ASCII: a lone surrogate survives as an escape), or None when it is
    too large or too deep to keep."""
    try:
        text = json.dumps(raw, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return None
    return text if len(text) <= MAX_RAW_EVENT else None


def as_raw(event: CallEvent) -> str:
    """A valid event back in amoCRM's form (for one that was read but could not be stored)."""
    singular = next(k for k, v in ENTITY_PLURAL.items() if v == event.entity_type)
    kind = next(k for k, v in CALL_EVENT_TYPES.items() if v == event.direction)
    raw = {
        "id": event.event_id,
        "type": kind,
        "entity_type": singular,
        "entity_id": event.entity_id,
        "created_at": event.created_at,
        "value_after": [{"note": {"id": event.note_id}}],
    }
    return json.dumps(raw, separators=(",", ":"))


def _event_id(value: Any) -> str:
    """The event's id as text: amoCRM's ULID string, or an integer (older and proxied answers)."""
    if value is None or value == "":
        raise ValueError("field 'id' is missing")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(bounded_int(value, "id"))
    if not isinstance(value, str) or len(value) > MAX_EVENT_ID or clean_text(value) != value:
        raise ValueError(f"field 'id' is {shown(value)}, not an event id (a string or an integer)")
    return value


def parse_event(raw: Any) -> CallEvent:
    """Validate one raw event; raise ValueError naming the bad field and showing its value.

    The id may be a string or an integer; `entity_id`, `created_at` and the note's id an integer
    or a string of digits (see `id_int`)."""
    if not isinstance(raw, dict):
        raise ValueError(f"event is {shown(raw)}, not an object")
    event_id = _event_id(raw.get("id"))
    event_type = raw.get("type")
    direction = CALL_EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if direction is None:
        raise ValueError(f"field 'type' is {shown(event_type)}, not a call event")
    entity_type = raw.get("entity_type")
    plural = ENTITY_PLURAL.get(entity_type) if isinstance(entity_type, str) else None
    if plural is None:
        raise ValueError(f"field 'entity_type' is {shown(entity_type)}")
    entity_id = id_int(raw.get("entity_id"), "entity_id")
    created_at = id_int(raw.get("created_at"), "created_at")
    try:
        note_id = raw["value_after"][0]["note"]["id"]
    except (KeyError, IndexError, TypeError):
        after = shown(raw.get("value_after")) if "value_after" in raw else "absent"
        raise ValueError(f"field 'value_after[0].note.id' is missing (value_after: {after})") from None
    note_id = id_int(note_id, "value_after[0].note.id")
    return CallEvent(event_id, direction, plural, entity_id, note_id, created_at)


def _optional_int(value: Any, field: str, high: int = MAX_ID) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"field '{field}' is {shown(value)}, not a number")
    try:
        number = int(value) if isinstance(value, int) else int(str(value).strip()[:40])
    except (TypeError, ValueError):
        raise ValueError(f"field '{field}' is {shown(value)}, not a number") from None
    if not 0 <= number <= high:
        raise ValueError(f"field '{field}' is {shown(value)}, out of range (0..{high})")
    return number


def _optional_text(value: Any) -> str:
    return "" if value is None else clean_text(value).strip()


def parse_note(raw: Any) -> CallNote:
    """Validate one raw call note; raise ValueError naming the bad field."""
    if not isinstance(raw, dict):
        raise ValueError(f"note is {shown(raw)}, not an object")
    note_id = id_int(raw.get("id"), "id")
    if raw.get("note_type") not in ("call_in", "call_out"):
        raise ValueError(f"field 'note_type' is {shown(raw.get('note_type'))}, not call_in/call_out")
    params = raw.get("params")
    if not isinstance(params, dict):
        raise ValueError(f"field 'params' is {shown(params)}, not an object")
    duration = _optional_int(params.get("duration"), "params.duration", MAX_DURATION)
    link = _optional_text(params.get("link")) if isinstance(params.get("link"), str) else ""
    responsible = _optional_text(params.get("call_responsible"))
    return CallNote(
        note_id=note_id,
        duration=duration,
        phone=_optional_text(params.get("phone")),
        link=link or None,
        call_status=_optional_int(params.get("call_status"), "params.call_status", MAX_STATUS),
        source=_optional_text(params.get("source")),
        responsible_user_id=_optional_int(raw.get("responsible_user_id"), "responsible_user_id"),
        call_responsible=responsible or None,
    )
