"""Matching trackers' phrases in utterances (see the package contract).

A phrase is a sequence of tokens (`trackers.morph`), each a set of keys (lemmas, a number's
value); a transcript token matches a phrase token when their sets share a key, so an
ambiguous word matches through any of its readings. The phrases are indexed by the keys of
their first token: at each position of an utterance only the phrases that can start there
are tried, which keeps a match linear in the transcript's length whatever the number of
phrases. Phrases are user text: they are tokenised, never compiled into a regex.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from salesbot_poller.config.trackers import TrackerConfig
from salesbot_poller.trackers.lines import Utterance
from salesbot_poller.trackers.morph import Lemmas, Token, tokens

MAX_GAP = 1  # other words allowed between two words of a phrase


@dataclass(frozen=True)
class Hit:
    tracker: str
    speaker: str  # "manager" / "client" / ""
    phrase: str  # the words as spoken, first matched word to last
    at: float | None


@dataclass(frozen=True)
class _Phrase:
    tracker: int  # its tracker's position in `Matcher.trackers`
    words: tuple[frozenset[str], ...]


class Matcher:
    """Compiled trackers; see the package contract. Immutable once built but for its cache of
    word forms (`morph.Lemmas`), so one Matcher may be shared by threads."""

    def __init__(self, trackers: Sequence[TrackerConfig]) -> None:
        self.trackers = list(trackers)
        self.lemmas = Lemmas()
        self._index: dict[str, list[_Phrase]] = defaultdict(list)
        for position, tracker in enumerate(self.trackers):
            for text in tracker.phrases:
                words = tuple(t.keys for t in tokens(text, self.lemmas))
                if not words:
                    continue  # config validation refuses such a phrase; a bare Matcher skips it
                phrase = _Phrase(position, words)
                for key in words[0]:
                    self._index[key].append(phrase)
        self._index = dict(self._index)

    def hits(self, lines: Iterable[Utterance], names: Sequence[str] | None = None) -> list[Hit]:
        """See the package contract. Hits of one tracker never overlap: at a position where
        several of its phrases match, the longest wins; the next hit starts after it."""
        wanted = {i for i, t in enumerate(self.trackers) if names is None or t.name in names}
        found: list[Hit] = []
        for line in lines:
            searched = {i for i in wanted if _hears(self.trackers[i].speaker, line.role)}
            if searched:
                found.extend(self._line_hits(line, searched))
        return found

    def _line_hits(self, line: Utterance, searched: set[int]) -> list[Hit]:
        words = tokens(line.text, self.lemmas)
        free_from = dict.fromkeys(searched, 0)  # a tracker's next hit starts at or after this
        found: list[Hit] = []
        for at, word in enumerate(words):
            best: dict[int, int] = {}  # tracker -> last word of its longest match starting here
            for key in word.keys:
                for phrase in self._index.get(key, ()):
                    if phrase.tracker not in searched or free_from[phrase.tracker] > at:
                        continue
                    last = _match_from(words, at, phrase.words)
                    if last is not None and last > best.get(phrase.tracker, -1):
                        best[phrase.tracker] = last
            for tracker, last in sorted(best.items()):
                free_from[tracker] = last + 1
                spoken = line.text[word.start : words[last].end]
                found.append(Hit(self.trackers[tracker].name, line.role, spoken, line.at))
        return found

    def missing(self, hits: Sequence[Hit], names: Sequence[str] | None = None) -> list[str]:
        said = {h.tracker for h in hits}
        return [t.name for t in self.trackers if t.expect and (names is None or t.name in names) and t.name not in said]


def _hears(speaker: str, role: str) -> bool:
    """Whether a tracker of `speaker` searches an utterance of `role` (unknown: every tracker)."""
    return speaker == "any" or not role or role == speaker


def _match_from(words: Sequence[Token], at: int, phrase: Sequence[frozenset[str]]) -> int | None:
    """The position of the phrase's last word when it matches with its first word at `at`
    (already known to), each next word at most `MAX_GAP` words after the one before; the
    earliest such ending. Backtracks over the gap choices: at most (MAX_GAP + 1) ** len(phrase)
    steps for a phrase of a dozen words, in practice one or two."""
    if len(phrase) == 1:
        return at
    step = phrase[1]
    for nxt in range(at + 1, min(at + 2 + MAX_GAP, len(words))):
        if not step.isdisjoint(words[nxt].keys):
            last = _match_from(words, nxt, phrase[1:])
            if last is not None:
                return last
    return None
