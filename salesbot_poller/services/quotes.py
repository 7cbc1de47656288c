"""Is an evidence quote really in the transcript, and when in the call was it said?

Contract: `QuoteIndex(transcript).find(quote)` returns a `Match` (how much of the quote was
found, 0..1, and the time of the line it starts on, in seconds, when the transcript's lines
carry `[mm:ss]` / `[h:mm:ss]`) or None for an empty quote.
- Both sides are normalised first: lower case, ё -> е, every run of characters that are not
  letters or digits -> one space (punctuation, «ёлочки», dashes, the "…" of an elision).
- The score is the share of the quote's characters found, in order, in the best window of
  transcript words (blocks of 3+ characters, so scattered letters do not add up): a slip
  of recognition or a dropped filler costs a little, an invented clause costs its length.
  Windows start where one of the quote's three rarest words of 4+ letters occurs in the
  call, so a 40-minute call is searched in milliseconds, not by sliding over every word.
- A quote of more than `MAX_QUOTE_CHARS` (normalised) scores 0: the prompt asks for a short
  one, and a model pasting pages would make the search quadratic.
- `verified(match)` compares with `QUOTE_THRESHOLD`, measured on the eval set
  (`benchmarks/quotes.py`): of 209 real quotes as models give them the lowest scored 0.895,
  of 94 paraphrased, invented or fact-changed ones the highest 0.855; 0.88 lies between.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher

QUOTE_THRESHOLD = 0.88
MAX_QUOTE_CHARS = 400
ANCHORS = 3
_STAMP = re.compile(r"^\s*\[(?:(\d+):)?(\d{1,3}):(\d{2})\]")
_NOT_WORD = re.compile(r"[^\w]+|_")
_MIN_BLOCK = 3


@dataclass(frozen=True)
class Match:
    score: float
    at: int | None  # seconds from the start of the call; None without timestamps


def normalise(text: str) -> str:
    return " ".join(_NOT_WORD.sub(" ", text.lower().replace("ё", "е")).split())


def clock(seconds: int) -> str:
    """mm:ss, or h:mm:ss from an hour on."""
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class QuoteIndex:
    """The transcript's words, each with the time of its line."""

    def __init__(self, transcript: str) -> None:
        self.words: list[str] = []
        self.times: list[int | None] = []
        self._where: dict[str, list[int]] = {}
        for line in transcript.splitlines():
            stamp = _STAMP.match(line)
            at = None
            if stamp:
                hours, minutes, seconds = stamp.groups()
                at = int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)
                line = line[stamp.end() :]
            for word in normalise(line).split():
                self._where.setdefault(word, []).append(len(self.words))
                self.words.append(word)
                self.times.append(at)

    def find(self, quote: str) -> Match | None:
        wanted = normalise(quote).split()
        if not wanted:
            return None
        target = " ".join(wanted)
        if len(target) > MAX_QUOTE_CHARS:
            return Match(0.0, None)
        # Anchors: the quote's rarest words that the call has (a misheard or changed word
        # is then not needed to find the place); each occurrence proposes a window start.
        present = [
            (len(self._where[word]), offset, word)
            for offset, word in enumerate(wanted)
            if word in self._where and (len(word) >= 4 or len(wanted) <= 2)
        ]
        starts: set[int] = set()
        for _, offset, word in sorted(present)[:ANCHORS]:
            starts.update(max(0, pos - offset) for pos in self._where[word])
        best, best_start = 0, 0
        matcher = SequenceMatcher(autojunk=False)
        matcher.set_seq2(target)
        # An elided quote ("добрый день … меня зовут") spans more words than it has.
        widths = sorted({len(wanted), len(wanted) + 1, len(wanted) + 2, round(len(wanted) * 1.6) + 1})
        for start in sorted(starts):
            for width in widths:
                matcher.set_seq1(" ".join(self.words[start : start + width]))
                found = sum(b.size for b in matcher.get_matching_blocks() if b.size >= _MIN_BLOCK)
                if found > best:
                    best, best_start = found, start
        if not best:
            return Match(0.0, None)
        return Match(min(1.0, best / len(target)), self.times[best_start])


def verified(match: Match | None, threshold: float = QUOTE_THRESHOLD) -> bool:
    return match is not None and match.score >= threshold
