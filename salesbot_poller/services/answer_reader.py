"""Reading a chat model's analysis answer, keeping what is usable of a careless one.

Contract: `read_answer(content, ids)` never raises. It returns a `Reading` with every field
it could read and, in `problems`, one line per thing it had to drop or replace, naming the
field and the value (cut short):
- the content is JSON, or JSON inside a ```json fence or surrounded by prose (smaller local
  models do that); anything else reads as an empty answer;
- `rubric` is an object keyed by item id (the schema's form) or a list of objects with an
  `item_id` (the form of earlier versions and of some servers); a verdict is matched
  case-insensitively, with spaces or hyphens for underscores; an item missing or with a
  verdict that is not one of the four is left out of `verdicts` (the caller shows it as not
  assessed); ids that are not configured are ignored;
- an optional field that is malformed is dropped: a due date that is not YYYY-MM-DD, an
  unknown sentiment (neutral), a list that is not a list, a list entry that is not text;
- `Reading.usable` is false only when there is neither a summary nor a single verdict: the
  one case worth paying for a re-ask.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, get_args

from salesbot_poller.domain import ItemVerdict, NextStep, ObjectionHandling, Sentiment, Verdict
from salesbot_poller.logs import excerpt

VERDICTS: tuple[str, ...] = get_args(Verdict)
SENTIMENTS: tuple[str, ...] = get_args(Sentiment)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


@dataclass
class Reading:
    summary: str = ""
    topic: str = ""
    verdicts: dict[str, ItemVerdict] = field(default_factory=dict)
    client_needs: list[str] = field(default_factory=list)
    objections: list[ObjectionHandling] = field(default_factory=list)
    next_step: NextStep | None = None
    risk_flags: list[str] = field(default_factory=list)
    sentiment: Sentiment = "neutral"
    problems: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return bool(self.summary) or bool(self.verdicts)


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return repr(excerpt(text, 60))


def parse_json_object(content: str) -> dict[str, Any] | None:
    """The JSON object in `content`: the whole text, a fenced block, or from the first "{"
    to the last "}"; None when there is none."""
    candidates = [content]
    candidates += [m.group(1) for m in _FENCE.finditer(content)]
    start, end = content.find("{"), content.rfind("}")
    if 0 <= start < end:
        candidates.append(content[start : end + 1])
    for text in candidates:
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def read_answer(content: str | None, ids: tuple[str, ...]) -> Reading:
    """See the module contract."""
    reading = Reading()
    data = parse_json_object(content or "")
    if data is None:
        reading.problems.append(f"the answer is not a JSON object: {_shown(content or '')}")
        return reading
    reading.summary = _text(data, "summary", reading)
    reading.topic = _text(data, "topic", reading)
    reading.verdicts = _verdicts(data.get("rubric"), ids, reading.problems)
    reading.client_needs = _texts(data, "client_needs", reading)
    reading.risk_flags = _texts(data, "risk_flags", reading)
    reading.objections = _objections(data.get("objections"), reading.problems)
    reading.next_step = _next_step(data.get("next_step"), reading.problems)
    sentiment = data.get("sentiment")
    if isinstance(sentiment, str) and sentiment.strip().lower() in SENTIMENTS:
        reading.sentiment = sentiment.strip().lower()  # type: ignore[assignment]
    elif sentiment is not None:
        reading.problems.append(f"sentiment {_shown(sentiment)} is not one of {', '.join(SENTIMENTS)}: neutral")
    return reading


def _text(data: dict[str, Any], key: str, reading: Reading) -> str:
    value = data.get(key)
    if isinstance(value, str):
        return value.strip()
    if value is not None:
        reading.problems.append(f"{key} {_shown(value)} is not text: dropped")
    return ""


def _texts(data: dict[str, Any], key: str, reading: Reading) -> list[str]:
    value = data.get(key)
    if value is None:
        return []
    if isinstance(value, str):  # one item given as a string
        value = [value]
    if not isinstance(value, list):
        reading.problems.append(f"{key} {_shown(value)} is not a list: dropped")
        return []
    kept = [v.strip() for v in value if isinstance(v, str) and v.strip()]
    if len(kept) < len(value):
        reading.problems.append(f"{key}: {len(value) - len(kept)} entry(ies) that are not text dropped")
    return kept


def _verdict_word(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    word = re.sub(r"[\s\-]+", "_", value.strip().lower())
    return word if word in VERDICTS else None


def _verdicts(rubric: object, ids: tuple[str, ...], problems: list[str]) -> dict[str, ItemVerdict]:
    if isinstance(rubric, list):  # [{"item_id": ..., ...}]: the list form
        rubric = {
            str(entry.get("item_id", entry.get("id"))): entry
            for entry in rubric
            if isinstance(entry, dict) and (entry.get("item_id") or entry.get("id"))
        }
    if not isinstance(rubric, dict):
        problems.append(f"rubric {_shown(rubric)} is neither an object nor a list: no item assessed")
        return {}
    found: dict[str, ItemVerdict] = {}
    for item_id in ids:
        entry = rubric.get(item_id)
        if isinstance(entry, str):  # {"greeting": "done"}
            entry = {"verdict": entry}
        if not isinstance(entry, dict):
            problems.append(f"rubric.{item_id}: left out of the answer: not assessed")
            continue
        verdict = _verdict_word(entry.get("verdict"))
        if verdict is None:
            problems.append(
                f"rubric.{item_id}.verdict {_shown(entry.get('verdict'))} is not one of"
                f" {', '.join(VERDICTS)}: not assessed"
            )
            continue
        evidence = entry.get("evidence")
        confidence = entry.get("confidence")
        found[item_id] = ItemVerdict(
            verdict=verdict,
            evidence=evidence.strip() if isinstance(evidence, str) else "",
            # Not worth a paid re-ask: a confidence of 1.2 means "sure", a missing one "unknown".
            confidence=min(1.0, max(0.0, float(confidence)))
            if isinstance(confidence, int | float) and not isinstance(confidence, bool)
            else 0.0,
        )
    return found


def _objections(value: object, problems: list[str]) -> list[ObjectionHandling]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f"objections {_shown(value)} is not a list: dropped")
        return []
    kept = []
    for entry in value:
        if isinstance(entry, str) and entry.strip():
            kept.append(ObjectionHandling(objection=entry.strip(), handling=""))
        elif isinstance(entry, dict) and isinstance(entry.get("objection"), str) and entry["objection"].strip():
            handling = entry.get("handling")
            kept.append(
                ObjectionHandling(
                    objection=entry["objection"].strip(),
                    handling=handling.strip() if isinstance(handling, str) else "",
                )
            )
        else:
            problems.append(f"objections: entry {_shown(entry)} dropped")
    return kept


def _next_step(value: object, problems: list[str]) -> NextStep | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = {"action": value, "due_date": None}
    if not isinstance(value, dict) or not isinstance(value.get("action"), str) or not value["action"].strip():
        problems.append(f"next_step {_shown(value)} has no action: dropped")
        return None
    due = value.get("due_date")
    if due is not None:
        try:
            date.fromisoformat(due if isinstance(due, str) else "")
        except ValueError:
            problems.append(f"next_step.due_date {_shown(due)} is not a date (YYYY-MM-DD): dropped")
            due = None
    return NextStep(action=value["action"].strip(), due_date=due or None)
