"""Phone, card and spoken passport numbers in Russian call transcripts, found as runs of
number groups (the number half of `redact_pii`).

Contract of `number_spans(text, phone, card, passport)`: the (start, end, kind) spans of the
numbers of the asked kinds, in order, not overlapping. Pure, deterministic, linear in the text.
- A run is a sequence of number groups: written digits ("916", "+7") or Russian cardinal words
  ("девятьсот шестнадцать" is one group, "ноль" one, "четыре тысячи двести" one). Between
  two groups of a run may stand spaces, dashes, brackets, a dot with no space (8.916.123),
  an ellipsis (a pause), and commas or sentence ends between spoken groups. Filler words
  (`FILLERS`: "ээ", "ну", "так", "да", "записывайте", ...) and the start of a speaker's line
  of the dialogue ("Менеджер: ", "[01:15] Клиент: ") may stand there too, with any of that
  punctuation; any other word, a colon, a semicolon or a date ends the run.
- A phone is a Russian number of 11 digits starting with 7 or 8, or of 10 starting with
  3, 4, 8 or 9; a card 16 or 19 digits (no Luhn check: a misheard digit is still a card);
  a passport, when asked for, 10 digits after "паспорт" or "серия". Each is made of whole
  groups of one run. A group that opens a speaker's line and repeats the end of the digits
  said so far ("Клиент: восемь девятьсот шестнадцать / Менеджер: девятьсот шестнадцать, так /
  Клиент: сто двадцать три ...") is an echo: it is redacted with the number, not counted.
  A round spoken group and the next one across a pause may be read as one ("восемьсот / да /
  шестнадцать" as 816) when that makes the number whole.
- Not a phone: a candidate with a group in thousands ("сорок пять тысяч") or written as an
  amount ("8 500 000", "12 500"); not a card: one with a round thousands group ("три
  тысячи"); neither: round numbers listed with pauses ("800, потом 900, потом 1000";
  "сорок пять, пятьдесят, шестьдесят, семьдесят"). An 11-digit phone wins over a card read
  from the same digits, a card over a 10-digit phone; where candidates overlap the one
  reaching further wins ("15:30 8 916 ...").
- The spans: one per speaker's line the number spans (the lines' starts and the words
  between numbers of different lines are kept), each from the first group (with a "плюс"
  or a bracket before it) to the last (with a closing bracket).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
THOUSAND = frozenset({"тысяча", "тысячи", "тысяч", "тысячу"})
ZERO = ("ноль", "нуль")
PLUS = "плюс"
# Words people say while dictating a number, between its groups. Kept small: every word here
# lets two numbers join, so a word that often stands between a price and a quantity is not.
FILLERS = frozenset(
    {
        "э", "ээ", "эээ", "эм", "эмм", "мм", "ммм", "ну", "так", "значит", "да", "ага", "угу", "вот",
        "это", "и", "а", "пишите", "запишите", "записывайте", "записываю", "записал", "записала",
        "дальше", "далее", "потом", "последние", "сейчас", "щас", "секунду", "номер",
    }
)  # fmt: skip
MAX_FILLERS = 4  # more words than this between two groups: not one number any more
MAX_GROUPS = 40  # a number never has more groups (echoes included): bounds the search
MAX_READINGS = 64  # readings of the groups from one start tried at most (see `_completions`)

_SCAN = re.compile(
    r"(?P<label>^[ \t]*(?:\[\d{1,2}:\d{2}(?::\d{2})?\][ \t]*)?(?:Менеджер|Клиент):)"
    r"|(?P<date>(?<![\d.])\d{1,2}\.\d{1,2}\.(?:\d{4}|\d{2})(?![\d.]))"
    r"|(?P<token>\+?\d+|[^\W\d_]+)",
    re.MULTILINE,
)
# Between groups with no filler: spaces, dashes, commas (see `_joins`), brackets, a dot with
# no space around it (8.916.123.45.67), an ellipsis. A colon (15:30) or a sentence end breaks.
_GAP = re.compile(r"[\s,()\-–—]*|\.|[\s,]*(?:\.{2,}|…)[\s,]*")
_SPOKEN_GAP = re.compile(r"[\s,.?!…\-–—]*")  # between number words: sentence ends are pauses
_LOOSE_GAP = re.compile(r"[\s,.?!…()\-–—]*")  # around fillers and speaker lines
_PASSPORT = re.compile(r"(?:паспорт\w*|серия|серии)\W", re.IGNORECASE)


@dataclass
class _Group:
    """A group of digits as written or spoken ("916", "девятьсот шестнадцать"), with its span."""

    start: int
    end: int
    digits: str = ""
    written: bool = False  # digits, not words
    low: int = 0  # a spoken group: the lowest place filled (4 thousands, 3 hundreds, 2 tens, 1 units)
    thousands: bool = False  # said with "тысяча"
    turn: bool = False  # the first group of a speaker's line (after another group of the run)
    pause: bool = False  # a filler, a speaker's line, a comma or a sentence end before it


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


def _joins(gap: str, fillers: int, turn: bool, written: bool, last_written: bool) -> bool:
    """Whether two number tokens with `gap` (punctuation only) between them are of one run."""
    if fillers or turn:
        return fillers <= MAX_FILLERS and _LOOSE_GAP.fullmatch(gap) is not None
    if not written and not last_written:
        return _SPOKEN_GAP.fullmatch(gap) is not None
    # A comma between written groups separates amounts ("8 500 000, 9 000 000").
    return _GAP.fullmatch(gap) is not None and not ("," in gap and written and last_written)


def _runs(text: str) -> list[list[_Group]]:
    """The runs of number groups in `text` (see the module contract), in order."""
    runs: list[list[_Group]] = []
    run: list[_Group] = []
    spoken: _Group | None = None  # the spoken group being built
    value = 0
    last_end, last_written = -1, False
    gap: list[str] = []  # the text between the scanned items since the last number token
    fillers, turn, scanned = 0, False, 0

    def close() -> None:
        nonlocal spoken, value
        if spoken is not None:
            spoken.digits = str(value)
            run.append(spoken)
        spoken, value = None, 0

    def flush() -> None:
        nonlocal run, last_end
        close()
        if run:
            runs.append(run)
        run, last_end = [], -1

    for match in _SCAN.finditer(text):
        gap.append(text[scanned : match.start()])
        scanned = match.end()
        if match["label"]:
            turn = True
            continue
        token = match[0]
        word = token.lower().replace("ё", "е")
        written = token.lstrip("+").isdigit()
        place = _word_value(word)
        number = written or place or word in ZERO or word == PLUS or word in THOUSAND
        if match["date"] or not (number or word in FILLERS):
            flush()
        if not number:
            fillers += word in FILLERS
            if last_end < 0:
                gap, fillers, turn = [], 0, False
            continue
        loose = fillers > 0 or turn
        if last_end >= 0 and not _joins("".join(gap), fillers, turn, written, last_written):
            flush()
        new_turn = turn and last_end >= 0
        pause = last_end >= 0 and (loose or any(mark in "".join(gap) for mark in ",.?!…"))
        if loose:
            close()  # a pause between groups ends the spoken one ("сто двадцать / да / три")
        gap, fillers, turn = [], 0, False
        last_end, last_written = match.end(), written
        if word in THOUSAND:
            if spoken is not None and not spoken.thousands:
                value, spoken.thousands, spoken.low, spoken.end = value * 1000, True, 4, match.end()
                continue
            close()
            spoken, value = _Group(match.start(), match.end(), low=4, thousands=True, turn=new_turn, pause=pause), 1000
            continue
        if place is None:
            close()
            digits = token.lstrip("+") if written else "" if word == PLUS else "0"
            run.append(_Group(match.start(), match.end(), digits, written=written, turn=new_turn, pause=pause))
            continue
        amount, high, low = place
        # A word joins the group when it fills a lower place than the group has filled
        # ("сто" "двадцать" "три"); else it starts a new group ("восемь" "девятьсот").
        if spoken is None or high >= spoken.low:
            close()
            spoken = _Group(match.start(), match.end(), turn=new_turn, pause=pause)
        spoken.end, spoken.low = match.end(), low
        value += amount
    flush()
    return runs


def _is_amount(groups: list[_Group], text: str) -> bool:
    """Written groups that read as thousands, "4 500 000 000"; or a part of them, written with
    single spaces, that does and ends in hundreds ("8 500 000, ну, 9 000 000"; "12 500")."""
    segments: list[list[_Group]] = []
    for k, group in enumerate(groups):
        before = groups[k - 1] if k else None
        if before is None or not (before.written and group.written and text[before.end : group.start] == " "):
            segments.append([])
        segments[-1].append(group)

    def thousands(part: list[_Group]) -> bool:
        sizes = [len(g.digits) for g in part]
        return len(part) >= 2 and all(g.written for g in part) and 1 <= sizes[0] <= 3 and set(sizes[1:]) == {3}

    if len(segments) == 1 and thousands(segments[0]):
        return True
    return any(thousands(s) and s[-1].digits.endswith("00") for s in segments)


def _is_list(groups: list[_Group]) -> bool:
    """Round numbers said one by one, with pauses between ("800, потом 900, потом 1000";
    "сорок пять, пятьдесят, шестьдесят, семьдесят"): two hundreds ending in "00", or three
    groups ending in "0"."""
    hundreds = sum(len(g.digits) >= 3 and g.digits.endswith("00") for g in groups)
    tens = sum(len(g.digits) >= 2 and g.digits.endswith("0") for g in groups)
    return (hundreds >= 2 or tens >= 3) and any(g.pause for g in groups[1:])


def _merged(run: list[_Group], j: int) -> str | None:
    """The digits of spoken group `j` and the next one read as one, when a pause split a
    number ("девятьсот / да / шестнадцать" is 916): the next fills the first one's zeros."""
    if j + 1 >= len(run):
        return None
    first, second = run[j], run[j + 1]
    if first.written or second.written or first.thousands or second.thousands or not second.pause:
        return None
    zeros = len(first.digits) - len(first.digits.rstrip("0"))
    value = int(second.digits or "0")
    return str(int(first.digits) + value) if first.digits and 0 < value < 10**zeros else None


def _echo_end(run: list[_Group], j: int, digits: str) -> int | None:
    """The end (exclusive) of the longest echo opening the speaker's line at group `j`: its
    groups repeat the end of `digits`, at least two digits of it."""
    said, best = "", None
    for k in range(j, len(run)):
        if k > j and run[k].turn:
            break
        said += run[k].digits
        if len(said) > len(digits):
            break
        if len(said) >= 2 and digits.endswith(said):
            best = k + 1
    return best


def _completions(run: list[_Group], i: int) -> list[tuple[int, str, bool]]:
    """(end exclusive, digits, thousands said) of every reading of groups from `i` that
    reaches 10, 11, 16 or 19 digits: with and without skipping each echo, and with and
    without reading a split group as one (`_merged`)."""
    found: list[tuple[int, str, bool]] = []
    seen: set[tuple[int, str, bool]] = set()

    def walk(j: int, digits: str, thousands: bool) -> None:
        # Each reading once, and few in all: echoes and splits branch, and a long dialogue of
        # short repeated numbers must not make the search exponential.
        if (j, digits, thousands) in seen or len(seen) >= MAX_READINGS:
            return
        seen.add((j, digits, thousands))
        if len(digits) in (10, 11, 16, 19) and j > i:
            found.append((j, digits, thousands))
        if j >= len(run) or j - i >= MAX_GROUPS or len(digits) >= 19:
            return
        if j > i and run[j].turn and (echo := _echo_end(run, j, digits)) is not None:
            walk(echo, digits, thousands)
        if (merged := _merged(run, j)) is not None:
            walk(j + 2, digits + merged, thousands)
        walk(j + 1, digits + run[j].digits, thousands or run[j].thousands)

    walk(i, "", False)
    return found


def _is_phone(digits: str) -> bool:
    if len(digits) == 11:
        return digits[0] in "78"
    return len(digits) == 10 and digits[0] in "3489"


@dataclass
class _Match:
    start: int  # group index
    end: int  # exclusive
    kind: str
    digits: str
    rank: int  # passport 3, 11-digit phone 4, card 2, 10-digit phone 1


def _match_at(run: list[_Group], i: int, text: str, kinds: tuple[bool, bool, bool]) -> _Match | None:
    """The phone, card or passport starting at group `i`, if any (see the module contract)."""
    phone, card, passport = kinds
    if not run[i].digits:  # a lone "плюс" starts nothing (it is taken in with what follows)
        return None
    best: tuple[int, int, int] | None = None
    chosen: _Match | None = None
    for end, digits, thousands in _completions(run, i):
        if _is_list(run[i:end]):
            continue
        kind = ""
        if passport and len(digits) == 10 and _PASSPORT.search(text, max(0, run[i].start - 30), run[i].start):
            kind, rank = "passport", 3
        elif phone and _is_phone(digits) and not thousands and not _is_amount(run[i:end], text):
            kind, rank = "phone", 4 if len(digits) == 11 else 1
        elif card and len(digits) in (16, 19) and not any(g.thousands and g.digits.endswith("000") for g in run[i:end]):
            kind, rank = "card", 2
        if kind and (best is None or (rank, len(digits), end) > best):
            best, chosen = (rank, len(digits), end), _Match(i, end, kind, digits, rank)
    return chosen


def number_spans(text: str, phone: bool, card: bool, passport: bool = False) -> list[tuple[int, int, str]]:
    """See the module contract."""
    return [span for run in _runs(text) for span in _run_spans(run, text, (phone, card, passport))]


def _run_spans(run: list[_Group], text: str, kinds: tuple[bool, bool, bool]) -> list[tuple[int, int, str]]:
    memo: dict[int, _Match | None] = {}

    def at(k: int) -> _Match | None:
        if k not in memo:
            memo[k] = _match_at(run, k, text, kinds)
        return memo[k]

    spans: list[tuple[int, int, str]] = []
    i = 0
    while i < len(run):
        found = at(i)
        if found is None:
            i += 1
            continue
        for k in range(i + 1, len(run)):  # one starting inside this one reaching further wins, if as good
            if k >= found.end:
                break
            later = at(k)
            if later is not None and later.end > found.end and later.rank >= found.rank:
                found = later
        # The other side repeating the end of the number once it is said is redacted with it.
        if found.end < len(run) and run[found.end].turn:
            found.end = _echo_end(run, found.end, found.digits) or found.end
        spans += _spans(run, found, text)
        i = found.end
    return spans


def _spans(run: list[_Group], found: _Match, text: str) -> list[tuple[int, int, str]]:
    """One span per speaker's line the number spans (see the module contract)."""
    spans = []
    first = found.start
    for j in range(found.start + 1, found.end + 1):
        if j < found.end and not run[j].turn:
            continue
        start = run[first - 1].start if first > 0 and run[first - 1].digits == "" else run[first].start  # "плюс"
        if start > 0 and text[start - 1] == "(":
            start -= 1
        end = run[j - 1].end
        spans.append((start, end + (text[end : end + 1] == ")"), found.kind))
        first = j
    return spans
