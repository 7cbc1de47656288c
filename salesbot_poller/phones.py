"""Phone numbers: one normal form to compare them by, one way to show them.

amoCRM's notes write a number however the telephony wrote it: `79161234567`, `89161234567`,
`8 (916) 123-45-67`, `+7 916 123 45 67`, `9161234567`. Every place that compares numbers
(`poller.exclude_phones`, a missed call's callback, `forget --phone`, the bot's `/find` by
number) compares `key`s, and every message shows `display` or `mask`.

Contract:
- A value is read as ONE number when it is digits with the usual separators (spaces,
  brackets, dashes, dots), optionally a leading "+", and optionally an extension after it
  (`доб. 12`, `ext 12`, `x12`, `#12`, `вн. 12`). Anything else (two numbers, words) is not.
- A +7 number (Russia, and Kazakhstan: its 7xx codes are +7 too) is 11 digits starting
  with 7 (`+7…`, `7…`) or with 8 written without "+" (`8…`), or 10 digits starting with 3, 4,
  8 or 9 written without "+" (`9161234567`: the country code left off, as the redaction
  of transcripts reads it too). A bare 10-digit `7…` is not taken for Kazakh: too ambiguous.
  "00" and, before more than 11 digits, "810" (the international prefixes dialled from
  Russia) are dropped first: `8 10 44 20 7946 0958` is `+44…`.
- `key(value)`: "7" and the 10 digits for a +7 number (`79161234567` for each form above);
  for any other value its digits, international prefix dropped (`+44 20 7946 0958` and
  `0044 20 7946 0958` are both `442079460958`; `+1 207 946 0958` is `12079460958`, another
  number though its last 10 digits are the same); "" when there are no digits. An extension
  is not part of the key. A key shorter than `FULL_DIGITS` is an internal line, not a client.
- `dialable(value)`: the `key` when `value` is one number that is surely a phone number (a +7
  one, or one written internationally: "+", "00", "810"), "" otherwise (`/find 2024`, an
  order number, words): what the bot's `/find` looks up by number.
- `display(value)`: a +7 number as `+7 916 123-45-67` (its extension kept as written after
  it); any other value as written, its whitespace collapsed (`+44 20 7946 0958`, `+380…`
  and `+375…` are never regrouped as Russian).
- `mask(value)`: a +7 number as `+7 916 ***-**-67` (the code, the operator or area code and
  the last two digits; its extension kept); any other value keeps its first 2-4 and last 2
  characters, letters and digits between them become "*" (one shorter than 8 characters
  keeps only its first 2).
- Pure functions of the text, no I/O; control characters are the caller's to clean.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FULL_DIGITS = 7  # fewer digits: an extension or an internal line, never a client's number

_NUMBER = re.compile(
    r"(?P<number>\+?[\d(][\d\s().\-]*\d)"
    r"(?P<ext>[\s,;]*(?:доб(?:авочный)?\.?|ext\.?|x|#|вн\.?)\s*\d{1,6})?",
    re.IGNORECASE,
)
_RUSSIAN_TEN = "3489"  # first digit of a 10-digit number taken as +7 without its country code


@dataclass(frozen=True)
class _Parsed:
    digits: str  # international prefix dropped
    plus: bool  # written with "+" (or an international prefix)
    ext: str  # the extension as written, with what separated it ("" for none)

    @property
    def national(self) -> str | None:
        """The 10 digits after +7 when this is a +7 number, else None."""
        size, first = len(self.digits), self.digits[:1]
        if size == 11 and (first == "7" or (first == "8" and not self.plus)):
            return self.digits[1:]
        if size == 10 and first in _RUSSIAN_TEN and not self.plus:
            return self.digits
        return None


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _parse(value: str) -> _Parsed | None:
    found = _NUMBER.fullmatch(value)
    if found is None:
        return None
    digits = re.sub(r"\D", "", found["number"])
    plus = found["number"].startswith("+")
    if not plus and digits.startswith("00"):
        digits, plus = digits[2:], True
    elif not plus and digits.startswith("810") and len(digits) > 11:
        digits, plus = digits[3:], True
    return _Parsed(digits, plus, found["ext"] or "")


def key(value: str | None) -> str:
    """See the module contract."""
    text = _one_line(value or "")
    parsed = _parse(text)
    if parsed is None:
        return re.sub(r"\D", "", text)
    national = parsed.national
    return "7" + national if national else parsed.digits


def dialable(value: str) -> str:
    """See the module contract."""
    parsed = _parse(_one_line(value))
    if parsed is None:
        return ""
    national = parsed.national
    if national:
        return "7" + national
    return parsed.digits if parsed.plus and len(parsed.digits) > FULL_DIGITS else ""


def is_full(number_key: str) -> bool:
    """Whether a `key` is long enough to be a client's number (not an internal line)."""
    return len(number_key) >= FULL_DIGITS


def _grouped(national: str, middle: str) -> str:
    return f"+7 {national[:3]} {middle}-{national[8:]}"


def display(value: str) -> str:
    """See the module contract."""
    text = _one_line(value)
    parsed = _parse(text)
    national = parsed.national if parsed else None
    if parsed is None or national is None:
        return text
    return _grouped(national, f"{national[3:6]}-{national[6:8]}") + parsed.ext


def mask(value: str) -> str:
    """See the module contract."""
    text = _one_line(value)
    parsed = _parse(text)
    national = parsed.national if parsed else None
    if parsed is not None and national is not None:
        return _grouped(national, "***-**") + parsed.ext
    size = len(text)
    head = 2 if size < 12 else 3 if size < 16 else 4
    tail = 2 if size >= 8 else 0
    hidden = "".join("*" if c.isalnum() else c for c in text[head : size - tail])
    return text[:head] + hidden + text[size - tail :]
