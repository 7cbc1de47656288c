"""Personal data in Russian call transcripts, replaced by placeholders before the chat model sees it.

Contract of `redact(text, kinds)`: `text` with every value of the given `kinds` replaced by
its placeholder (`PLACEHOLDERS`); everything else is left byte for byte. Pure and
deterministic, no model; nothing happens at import.
- "email": written addresses (`ivan.petrov@mail.ru`, `ivan @ mail.ru`) and spoken ones ending
  in a known top-level domain (`иван точка петров собака мейл точка ру`, `ivan, собака, gmail,
  точка, com`), or a known mail service and its domain with no "точка" (`petrov собака bk ру`).
- "passport": a series and number after "паспорт" or "серия" (`паспорт 45 08 123456`,
  `серия 4508 номер 123456`, or spoken), or digits grouped exactly like one (`45 08 123456`).
- "card": 16 digits, or 19 (МИР, Maestro), written, spoken or mixed, in groups or in one.
- "phone": a Russian number of 11 digits starting with 7 or 8 (`+7`, `8`, `плюс семь`), or
  of 10 digits starting with 3, 4, 8 or 9 (no country code). Digits may be written, spoken
  ("восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь"), or mixed,
  grouped by spaces, dashes, commas or brackets, split by filler words ("восемь девятьсот
  шестнадцать, ээ, сто двадцать три ...") or across the speakers' lines of a dialogue.
  How numbers are read: `redact_numbers`.
- Not touched: prices, quantities, dates, times and durations (`сорок пять тысяч девятьсот
  рублей`, `12 500 ₽`, `25.12.2026`, `15:30`, `три тысячи штук`).
- A kind not asked for is not looked for; a value of one kind may then be caught as another
  (a passport number as a 10-digit phone): a placeholder either way, never the value.

`redact_kinds(values)` checks a configured list (unknown kinds raise `ValueError`);
`replace_phones(text, replace)` finds the phones the same way for another replacement.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from salesbot_poller.domain import DEFAULT_REDACT_KINDS, REDACT_KINDS, RedactKind
from salesbot_poller.services.redact_numbers import number_spans

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
# Mail services people name without "точка" before the domain ("petrov собака bk ру").
_SERVICES = r"(?:mail|gmail|yandex|ya|bk|inbox|list|rambler|icloud|outlook|мейл|майл|мэйл|маил|яндекс|джимейл|рамблер)"
_SEP = r"[\s,]+"  # speech-to-text puts commas around the spoken "собака" and "точка"
_HESITATION = r"(?:э+|эм+|м+|ну)"  # a pause after "собака": "ivan собака, ээ, mail точка ru"
_DOT = rf"(?:\.|{_SEP}точка{_SEP})"
_AT = rf"(?:\s*@\s*|{_SEP}(?:собака|собачка|эт)(?:{_SEP}{_HESITATION})?{_SEP})"
_EMAIL_WRITTEN = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,64}(?:\.[\w-]{1,64}){1,4}", re.IGNORECASE)
# The spoken local part is one word, or a few joined by "точка"/"нижнее подчёркивание"/"дефис".
# Bounded repeats: "точка" is an ordinary word too, and an unbounded chain of them would make
# the search quadratic in the length of the transcript.
_EMAIL_SPOKEN = re.compile(
    rf"(?<![\w.+-])[\w.+-]{{1,64}}(?:{_SEP}(?:точка|дефис|тире|нижнее\s+подч[её]ркивание|подч[её]ркивание)"
    rf"{_SEP}[\w.+-]{{1,64}}){{0,3}}{_AT}"
    rf"(?:[\w-]{{1,64}}(?:{_DOT}[\w-]{{1,64}}){{0,3}}{_DOT}{_TLDS}|{_SERVICES}{_SEP}{_TLDS})(?!\w)",
    re.IGNORECASE,
)
_PASSPORT_KEYWORD = re.compile(
    r"(?P<lead>(?:паспорт\w*|серия|серии)\D{0,25}?)"
    r"(?P<value>\d{2}[\s-]?\d{2}(?:[\s,-]*(?:номер|№|н\.)?[\s:-]*)\d{6})(?!\d)",
    re.IGNORECASE,
)
_PASSPORT_GROUPED = re.compile(r"(?<![\d-])\d{2} \d{2} \d{6}(?![\d-])")


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
    if "phone" in wanted or "card" in wanted or "passport" in wanted:
        text = _replace_numbers(text, "phone" in wanted, "card" in wanted, "passport" in wanted)
    return text


def replace_phones(text: str, replace: Callable[[str], str]) -> str:
    """`text` with each phone number `redact` would find replaced by `replace(number as written)`
    (the messages mask the numbers in a card's name this way)."""
    return _replace_numbers(text, True, False, False, replace)


def _replace_numbers(
    text: str, phone: bool, card: bool, passport: bool, replace: Callable[[str], str] | None = None
) -> str:
    pieces, done = [], 0
    for start, end, kind in number_spans(text, phone, card, passport):
        pieces += [text[done:start], replace(text[start:end]) if replace else PLACEHOLDERS[kind]]
        done = end
    return "".join([*pieces, text[done:]])
