"""Matching trackers' phrases in utterances (see the package contract).

INTERIM: words are compared as written (lower case, ё = е); lemmas through pymorphy3 and
numbers as words replace `_normal` in the trackers issue's core change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from salesbot_poller.config.trackers import TrackerConfig
from salesbot_poller.trackers.lines import Utterance

_WORD = re.compile(r"\w+(?:-\w+)*")
MAX_GAP = 1  # other words allowed between two words of a phrase


@dataclass(frozen=True)
class Hit:
    tracker: str
    speaker: str  # "manager" / "client" / ""
    phrase: str  # the words as spoken, first matched word to last
    at: float | None


def _normal(word: str) -> str:
    return word.lower().replace("ё", "е")


class Matcher:
    """Compiled trackers; see the package contract."""

    def __init__(self, trackers: Sequence[TrackerConfig]) -> None:
        self.trackers = list(trackers)
        self._phrases = {
            t.name: [tuple(_normal(w) for w in _WORD.findall(p)) for p in t.phrases] for t in self.trackers
        }

    def hits(self, lines: Iterable[Utterance], names: Sequence[str] | None = None) -> list[Hit]:
        chosen = [t for t in self.trackers if names is None or t.name in names]
        found: list[Hit] = []
        for line in lines:
            spans = [(m.start(), m.end(), _normal(m.group())) for m in _WORD.finditer(line.text)]
            words = [w for _, _, w in spans]
            for tracker in chosen:
                if tracker.speaker != "any" and line.role and line.role != tracker.speaker:
                    continue
                for phrase in self._phrases[tracker.name]:
                    for first, last in _occurrences(words, phrase):
                        text = line.text[spans[first][0] : spans[last][1]]
                        found.append(Hit(tracker.name, line.role, text, line.at))
        return found

    def missing(self, hits: Sequence[Hit], names: Sequence[str] | None = None) -> list[str]:
        said = {h.tracker for h in hits}
        return [t.name for t in self.trackers if t.expect and (names is None or t.name in names) and t.name not in said]


def _occurrences(words: Sequence[str], phrase: Sequence[str]) -> list[tuple[int, int]]:
    """(first, last) word positions of each non-overlapping occurrence of `phrase`."""
    found: list[tuple[int, int]] = []
    if not phrase:
        return found
    start = 0
    while start < len(words):
        if words[start] != phrase[0]:
            start += 1
            continue
        at, ok = start, True
        for word in phrase[1:]:
            window = words[at + 1 : at + 2 + MAX_GAP]
            if word not in window:
                ok = False
                break
            at = at + 1 + window.index(word)
        if ok:
            found.append((start, at))
            start = at + 1
        else:
            start += 1
    return found
