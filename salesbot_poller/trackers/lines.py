"""The stored transcript as utterances (see the package contract)."""

from __future__ import annotations

import re
from dataclasses import dataclass

ROLES = {"Менеджер": "manager", "Клиент": "client"}
_LINE = re.compile(r"^(?:\[(?:(\d+):)?(\d+):(\d{2})\]\s*)?(?:(Менеджер|Клиент):\s?)?(.*)$")


@dataclass(frozen=True)
class Utterance:
    role: str  # "manager" / "client" / "" (unknown)
    at: float | None  # seconds from the start of the call; None without timestamps
    text: str


def utterances(transcript: str) -> list[Utterance]:
    """See the package contract. Blank lines are dropped."""
    found: list[Utterance] = []
    for line in transcript.splitlines():
        if not line.strip():
            continue
        match = _LINE.match(line)
        assert match is not None  # the pattern matches any line
        hours, minutes, seconds, role, text = match.groups()
        at = None if minutes is None else int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)
        found.append(Utterance(ROLES.get(role or "", ""), None if at is None else float(at), text))
    return found
