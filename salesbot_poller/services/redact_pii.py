"""Personal data in Russian call transcripts, replaced by placeholders before the chat model sees it.

Contract of `redact(text, kinds)`: `text` with every value of the given `kinds` replaced by
its placeholder (`PLACEHOLDERS`); everything else is left byte for byte. Pure and
deterministic; nothing happens at import.
- "email": written addresses (`ivan.petrov@mail.ru`) and spoken ones ending in a known
  top-level domain (`иван точка петров собака мейл точка ру`).
- "passport": a series and number after "паспорт" or "серия" (`паспорт 45 08 123456`,
  `серия 4508 номер 123456`), or digits grouped exactly like one (`45 08 123456`).
- "card": 16 digits, or 19 (МИР, Maestro), written in groups or in one (spaces and dashes
  between groups); spoken card numbers are not looked for. No Luhn check:
  speech recognition mishears digits, and a misheard card number is still a card number;
  a 16-digit run in a sales call is practically never a price.
- "phone": a Russian number of 11 digits starting with 7 or 8 (`+7`, `8`, `плюс семь`), or
  of 10 digits starting with 3, 4, 8 or 9 (no country code). Digits may be written, spoken
  ("восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь"), or mixed
  ("восемь 916 123 45 67"), grouped by spaces, dashes, commas or brackets.
- Not touched: prices, quantities, dates, times and durations. Numbers are read as a run of
  number tokens (written groups of digits, or Russian cardinal words) joined only by spaces,
  dashes, brackets (and commas, between spoken groups); any other word ends the run
  ("тысяч", "рублей", "мая", ordinals like "пятого"), and so does a colon or a dot with a
  space. Within a run, a phone
  or a card must be whole groups of exactly 10/11 (16/19) digits, and groups that read as an
  amount written with thousands separators ("4 500 000 000") are not a phone.
- A kind not asked for is not looked for; a value of one kind may then be caught as another
  (a passport number as a 10-digit phone): a placeholder either way, never the value.

`redact_kinds(values)` checks a configured list (unknown kinds raise `ValueError`);
`replace_phones(text, replace)` finds the phones the same way for another replacement.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from salesbot_poller.domain import DEFAULT_REDACT_KINDS, REDACT_KINDS, RedactKind

Kind = RedactKind
KINDS = REDACT_KINDS
DEFAULT_KINDS = DEFAULT_REDACT_KINDS
PLACEHOLDERS: dict[str, str] = {
    "phone": "[телефон]",
    "email": "[email]",
    "card": "[карта]",
    "passport": "[паспорт]",
}

_TLDS = r"(?:ру|рф|ком|нет|орг|су|ru|com|net|org|рус|su|io|info|biz)"
_DOT = r"(?:\.|\s+точка\s+)"
_AT = r"(?:@|\s+(?:собака|собачка|эт)\s+)"
_EMAIL_WRITTEN = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,64}(?:\.[\w-]{1,64}){1,4}", re.IGNORECASE)
# The spoken local part is one word, or a few joined by "точка"/"нижнее подчёркивание"/"дефис".
# Bounded repeats: "точка" is an ordinary word too, and an unbounded chain of them would make
# the search quadratic in the length of the transcript.
_EMAIL_SPOKEN = re.compile(
    r"(?<![\w.+-])[\w.+-]{1,64}(?:\s+(?:точка|дефис|нижнее\s+подч[её]ркивание|подч[её]ркивание)\s+[\w.+-]{1,64}){0,3}"
    rf"{_AT}[\w-]{{1,64}}(?:{_DOT}[\w-]{{1,64}}){{0,3}}{_DOT}{_TLDS}(?!\w)",
    re.IGNORECASE,
)
_PASSPORT_KEYWORD = re.compile(
    r"(?P<lead>(?:паспорт\w*|серия|серии)\D{0,25}?)"
    r"(?P<value>\d{2}[\s-]?\d{2}(?:[\s,-]*(?:номер|№|н\.)?[\s:-]*)\d{6})(?!\d)",
    re.IGNORECASE,
)
_PASSPORT_GROUPED = re.compile(r"(?<![\d-])\d{2} \d{2} \d{6}(?![\d-])")

UNITS = {
    "один": 1, "одна": 1, "одно": 1, "два": 2, "две": 2, "три": 3, "четыре": 4, "пять": 5,
    "шесть": 6, "семь": 7, "восемь": 8, "девять": 9,
}  # fmt: skip
TEENS = {
    "десять": 10, "одиннадцать": 11, "двенадцать": 12, "тринадцать": 13, "четырнадцать": 14,
    "пятнадцать": 15, "шестнадцать": 16, "семнадцать": 17, "восемнадцать": 18, "девятнадцать": 19,
}  # fmt: skip
TENS = {
    "двадцать": 20, "тридцать": 30, "сорок": 40, "пятьдесят": 50, "шестьдесят": 60,
    "семьдесят": 70, "восемьдесят": 80, "девяносто": 90,
}  # fmt: skip
HUNDREDS = {
    "сто": 100, "двести": 200, "триста": 300, "четыреста": 400, "пятьсот": 500,
    "шестьсот": 600, "семьсот": 700, "восемьсот": 800, "девятьсот": 900,
}  # fmt: skip
ZERO = ("ноль", "нуль")
PLUS = "плюс"

_TOKEN = re.compile(r"\+?\d+|[^\W\d_]+")
# What may stand between two number tokens of one run: spaces, dashes, commas (see `_runs`),
# brackets, or a dot with no space around it (8.916.123.45.67). A colon (15:30) or a sentence
# end breaks the run.
_GAP = re.compile(r"[\s,()\-–—]*|\.")


@dataclass
class _Group:
    """A group of digits as written or spoken ("916", "девятьсот шестнадцать"), with its span."""

    start: int
    end: int
    digits: str = ""
    written: bool = False  # digits, not words
    low: int = 0  # a spoken group: the lowest place filled (3 hundreds, 2 tens, 1 units)


def redact_kinds(values: Iterable[str]) -> tuple[Kind, ...]:
    """`values` checked and in `KINDS` order, each once; `ValueError` names an unknown one."""
    wanted = list(values)
    unknown = [value for value in wanted if value not in KINDS]
    if unknown:
        raise ValueError(f"unknown kind {unknown[0]!r}: use {', '.join(KINDS)}")
    return tuple(kind for kind in KINDS if kind in wanted)


def redact(text: str, kinds: Iterable[str]) -> str:
    """See the module contract."""
    wanted = redact_kinds(kinds)
    if not wanted or not text:
        return text
    if "email" in wanted:
        text = _EMAIL_WRITTEN.sub(PLACEHOLDERS["email"], text)
        text = _EMAIL_SPOKEN.sub(PLACEHOLDERS["email"], text)
    if "passport" in wanted:
        text = _PASSPORT_KEYWORD.sub(lambda m: m["lead"] + PLACEHOLDERS["passport"], text)
        text = _PASSPORT_GROUPED.sub(PLACEHOLDERS["passport"], text)
    if "phone" in wanted or "card" in wanted:
        text = _redact_numbers(text, "phone" in wanted, "card" in wanted)
    return text


def _word_value(word: str) -> tuple[int, int, int] | None:
    """(value, highest place, lowest place) of a Russian cardinal word, places 3 hundreds,
    2 tens, 1 units ("пятнадцать" fills tens and units); None for any other word."""
    if word in HUNDREDS:
        return HUNDREDS[word], 3, 3
    if word in TENS:
        return TENS[word], 2, 2
    if word in TEENS:
        return TEENS[word], 2, 1
    if word in UNITS:
        return UNITS[word], 1, 1
    return None


def _runs(text: str) -> list[list[_Group]]:
    """The runs of number groups in `text` (see the module contract), in order."""
    runs: list[list[_Group]] = []
    run: list[_Group] = []
    spoken: _Group | None = None  # the spoken group being built
    value = 0
    last_end, last_written = -1, False

    def close() -> None:
        nonlocal spoken, value
        if spoken is not None:
            spoken.digits = str(value)
            run.append(spoken)
        spoken, value = None, 0

    def flush() -> None:
        nonlocal run
        close()
        if run:
            runs.append(run)
        run = []

    for match in _TOKEN.finditer(text):
        token = match[0]
        word = token.lower().replace("ё", "е")
        written = token.lstrip("+").isdigit()
        place = _word_value(word)
        if not (written or place or word in ZERO or word == PLUS):
            flush()
            last_end = -1
            continue
        gap = text[last_end : match.start()]
        # A comma joins spoken groups only ("восемь, девятьсот шестнадцать, ..."): between
        # written ones it separates amounts ("8 500 000, 9 000 000").
        if last_end >= 0 and (not _GAP.fullmatch(gap) or ("," in gap and (written or last_written))):
            flush()
        last_end, last_written = match.end(), written
        if place is None:
            close()
            digits = token.lstrip("+") if written else "" if word == PLUS else "0"
            run.append(_Group(match.start(), match.end(), digits, written=written))
            continue
        amount, high, low = place
        # A word joins the group when it fills a lower place than the group has filled
        # ("сто" "двадцать" "три"); else it starts a new group ("восемь" "девятьсот").
        if spoken is None or high >= spoken.low:
            close()
            spoken = _Group(match.start(), match.end())
        spoken.end, spoken.low = match.end(), low
        value += amount
    flush()
    return runs


def _is_amount(groups: list[_Group], text: str) -> bool:
    """Written groups separated by single spaces that read as thousands: "4 500 000 000"."""
    if not all(g.written for g in groups) or len(groups) < 2:
        return False
    gaps = [text[a.end : b.start] for a, b in itertools.pairwise(groups)]
    sizes = [len(g.digits) for g in groups]
    return all(gap == " " for gap in gaps) and 1 <= sizes[0] <= 3 and all(size == 3 for size in sizes[1:])


def _is_phone(digits: str) -> bool:
    if len(digits) == 11:
        return digits[0] in "78"
    return len(digits) == 10 and digits[0] in "3489"


def _match_at(run: list[_Group], i: int, text: str, phone: bool, card: bool) -> tuple[int, str] | None:
    """(end group index, exclusive; kind) of a phone or a card starting at group `i`, if any."""
    if not run[i].digits:  # a lone "плюс" starts nothing (it is taken in with what follows)
        return None
    digits = ""
    for j in range(i, len(run)):
        digits += run[j].digits
        more = digits + run[j + 1].digits if j + 1 < len(run) else digits
        # A card of 16 digits, or of 19 when the next group makes it 19 (МИР, Maestro).
        whole_card = len(digits) == 19 or (len(digits) == 16 and len(more) != 19)
        if card and whole_card and all(g.written for g in run[i : j + 1]):
            return j + 1, "card"
        # A phone; but "8 916 ..." at 10 digits reads one more group: the 11-digit form.
        longer = len(digits) == 10 and len(more) == 11 and _is_phone(more)
        if phone and _is_phone(digits) and not longer and not _is_amount(run[i : j + 1], text):
            return j + 1, "phone"
        if len(digits) >= 19:
            break
    return None


def replace_phones(text: str, replace: Callable[[str], str]) -> str:
    """`text` with each phone number `redact` would find replaced by `replace(number as written)`
    (the messages mask the numbers in a card's name this way)."""
    return _redact_numbers(text, True, False, replace)


def _redact_numbers(text: str, phone: bool, card: bool, replace: Callable[[str], str] | None = None) -> str:
    spans: list[tuple[int, int, str]] = []
    for run in _runs(text):
        i = 0
        while i < len(run):
            found = _match_at(run, i, text, phone, card)
            if found is None:
                i += 1
                continue
            end, kind = found
            start = run[i - 1].start if i > 0 and run[i - 1].digits == "" else run[i].start  # "плюс"
            if start > 0 and text[start - 1] == "(":
                start -= 1
            spans.append((start, run[end - 1].end + (text[run[end - 1].end : run[end - 1].end + 1] == ")"), kind))
            i = end
    pieces, done = [], 0
    for start, end, kind in spans:
        pieces += [text[done:start], replace(text[start:end]) if replace else PLACEHOLDERS[kind]]
        done = end
    return "".join([*pieces, text[done:]])
