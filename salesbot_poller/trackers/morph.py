"""Words as the matcher compares them: each word's set of lemmas (pymorphy3), numbers as values.

Contract:
- `analyzer()` is the one `pymorphy3.MorphAnalyzer` of the process, made on first use (it
  loads its dictionaries: about 15 MB) and shared by every `Lemmas`.
- `Lemmas()` gives a word form's keys: the normal forms of all its parses (an ambiguous word
  keeps every reading: "стали" is {"стать", "сталь"}), lower case, ё as е, plus the number's
  value as digits when a reading is a number word (`trackers.numbers`). Cached per form (up
  to `CACHE_SIZE` forms, then started afresh), so a transcript lemmatises each distinct form
  once. Safe to share between threads: a form two threads miss at once is analysed twice,
  with the same result.
- `tokens(text, lemmas)` splits text into `Token`s: words (letters and digits, hyphenated
  ones whole: "Стеллаж-Мастер", "10-го") and "%" (read as "процент"); a run of number words
  is ONE token whose key is its value ("двадцать пять", "две тысячи"), as are digits
  ("25", "10 000", "10-го" = 10), digits followed by "тысяча" ("10 тысяч" = 10000) and the
  number words' value alone; hesitations ("э", "эм", "ммм") are not words. Each token keeps
  where it was in the text (`start`, `end`), so a hit shows the words as spoken.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from salesbot_poller.trackers.numbers import NUMBER_LEMMAS, THOUSAND, combine

CACHE_SIZE = 200_000  # distinct word forms kept; a day of calls has far fewer
_WORD = re.compile(r"\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?!\d)|\w+(?:-\w+)*|%")
_DIGITS = re.compile(r"^(\d+)(?:-\w+)?$")
_HESITATION = re.compile(r"^(?:э+|э+м+|м+|хм+|а-а+|э-э+|мм-м+)$")
_analyzer: object | None = None
_analyzer_lock = threading.Lock()


def analyzer() -> object:
    """See the module contract (typed `object`: pymorphy3 ships no type hints)."""
    global _analyzer
    if _analyzer is None:
        with _analyzer_lock:
            if _analyzer is None:
                import pymorphy3  # type: ignore[import-untyped]  # here, not at import: loading its dictionaries takes a while

                _analyzer = pymorphy3.MorphAnalyzer()
    return _analyzer


@dataclass(frozen=True)
class Token:
    keys: frozenset[str]
    start: int
    end: int


def fold(word: str) -> str:
    return word.lower().replace("ё", "е")


class Lemmas:
    """See the module contract."""

    def __init__(self) -> None:
        self._cache: dict[str, frozenset[str]] = {}
        self._parse = analyzer().parse  # type: ignore[attr-defined]

    def __call__(self, form: str) -> frozenset[str]:
        """The keys of a word form already folded (`fold`)."""
        keys = self._cache.get(form)
        if keys is None:
            keys = self._analyse(form)
            if len(self._cache) >= CACHE_SIZE:
                self._cache = {}  # a new dict: a thread reading the old one still reads a whole one
            self._cache[form] = keys
        return keys

    def _analyse(self, form: str) -> frozenset[str]:
        digits = _DIGITS.match(form)
        if digits:
            return frozenset({str(int(digits.group(1)))})
        if form == "%":
            return frozenset({"процент"})
        lemmas = {fold(p.normal_form) for p in self._parse(form)} or {form}
        values = {NUMBER_LEMMAS[lemma][0] for lemma in lemmas if lemma in NUMBER_LEMMAS}
        return frozenset(lemmas | {str(v) for v in values})


def _number(keys: frozenset[str]) -> tuple[int, bool] | None:
    """The value of a number word (and whether it is an ordinal), from its lemmas."""
    for key in keys:
        found = NUMBER_LEMMAS.get(key)
        if found is not None:
            return found
    return None


def tokens(text: str, lemmas: Lemmas) -> list[Token]:
    """See the module contract."""
    words: list[tuple[str, int, int]] = []
    for match in _WORD.finditer(text):
        form = fold(match.group())
        if not _HESITATION.match(form):
            words.append((re.sub(r"\s", "", form), match.start(), match.end()))
    found: list[Token] = []
    at = 0
    while at < len(words):
        form, start, end = words[at]
        keys = lemmas(form)
        digits = _DIGITS.match(form)
        if digits:
            used = 1
            if at + 1 < len(words) and "тысяча" in lemmas(words[at + 1][0]):
                used, keys = 2, frozenset({str(int(digits.group(1)) * THOUSAND)})
            found.append(Token(keys, start, words[at + used - 1][2]))
            at += used
            continue
        run: list[tuple[int, bool]] = []
        while at + len(run) < len(words):
            number = _number(lemmas(words[at + len(run)][0]))
            if number is None or _DIGITS.match(words[at + len(run)][0]):
                break
            run.append(number)
        if len(run) < 2:
            found.append(Token(keys, start, end))
            at += 1
            continue
        used, value = combine(run)
        if used <= 1:
            found.append(Token(keys, start, end))
            at += 1
            continue
        found.append(Token(frozenset({str(value)}), start, words[at + used - 1][2]))
        at += used
    return found
