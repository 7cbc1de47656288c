"""Numbers said in words, as their value: "двадцать пять" and "25" are the same word to a phrase.

Contract:
- `NUMBER_LEMMAS` maps the lemma of every cardinal and ordinal number word from 0 to 1000
  ("пять", "пятый", "двести", "тысяча", "тысячный") to its value; lemmas come from the
  morphology (`trackers.morph`), so every case and gender form is covered ("пятидесяти",
  "двумстам", "десятого").
- `combine(values)` reads a run of number words (their values, each with whether it is an
  ordinal) the way Russian says a number: hundreds, then tens, then a unit or a teen, then
  "тысяча" multiplying what came before and another such group ("две тысячи пятьсот" =
  2500; "двадцать пятого" = 25); it returns how many of the words form the first number and
  its value. "два три" is two numbers (a unit never follows a unit).
"""

from __future__ import annotations

from collections.abc import Sequence

_UNITS = ["ноль", "один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять"]
_TEENS = [
    "десять",
    "одиннадцать",
    "двенадцать",
    "тринадцать",
    "четырнадцать",
    "пятнадцать",
    "шестнадцать",
    "семнадцать",
    "восемнадцать",
    "девятнадцать",
]
_TENS = ["двадцать", "тридцать", "сорок", "пятьдесят", "шестьдесят", "семьдесят", "восемьдесят", "девяносто"]
_HUNDREDS = ["сто", "двести", "триста", "четыреста", "пятьсот", "шестьсот", "семьсот", "восемьсот", "девятьсот"]
_UNIT_ORDINALS = [
    "нулевой",
    "первый",
    "второй",
    "третий",
    "четвертый",
    "пятый",
    "шестой",
    "седьмой",
    "восьмой",
    "девятый",
]
_TEEN_ORDINALS = [
    "десятый",
    "одиннадцатый",
    "двенадцатый",
    "тринадцатый",
    "четырнадцатый",
    "пятнадцатый",
    "шестнадцатый",
    "семнадцатый",
    "восемнадцатый",
    "девятнадцатый",
]
_TEN_ORDINALS = [
    "двадцатый",
    "тридцатый",
    "сороковой",
    "пятидесятый",
    "шестидесятый",
    "семидесятый",
    "восьмидесятый",
    "девяностый",
]
_HUNDRED_ORDINALS = [
    "сотый",
    "двухсотый",
    "трехсотый",
    "четырехсотый",
    "пятисотый",
    "шестисотый",
    "семисотый",
    "восьмисотый",
    "девятисотый",
]
THOUSAND = 1000

# lemma -> (value, is_ordinal); lemmas are written with е for ё, as the matcher folds them.
NUMBER_LEMMAS: dict[str, tuple[int, bool]] = {
    **{w: (i, False) for i, w in enumerate(_UNITS)},
    "нуль": (0, False),
    **{w: (10 + i, False) for i, w in enumerate(_TEENS)},
    **{w: (20 + 10 * i, False) for i, w in enumerate(_TENS)},
    **{w: (100 * (i + 1), False) for i, w in enumerate(_HUNDREDS)},
    "тысяча": (THOUSAND, False),
    **{w: (i, True) for i, w in enumerate(_UNIT_ORDINALS)},
    **{w: (10 + i, True) for i, w in enumerate(_TEEN_ORDINALS)},
    **{w: (20 + 10 * i, True) for i, w in enumerate(_TEN_ORDINALS)},
    **{w: (100 * (i + 1), True) for i, w in enumerate(_HUNDRED_ORDINALS)},
    "тысячный": (THOUSAND, True),
}


def _rank(value: int) -> int:
    """3 hundreds, 2 tens, 1 a unit or a teen, 0 zero: a group's words come in falling rank."""
    if value >= 100:
        return 3
    if value >= 20:
        return 2
    return 1 if value else 0


def _group(values: Sequence[tuple[int, bool]], start: int) -> tuple[int, int, bool]:
    """Words used, value and whether it ended on an ordinal, of the group below 1000 at `start`."""
    used, total, last_rank = 0, 0, 4
    for value, ordinal in values[start:]:
        rank = _rank(value)
        if value >= THOUSAND or rank >= last_rank or (rank == 1 and value >= 10 and last_rank == 2) or rank == 0:
            if rank == 0 and used == 0:
                return 1, 0, ordinal
            break
        total, used, last_rank = total + value, used + 1, rank
        if ordinal:
            return used, total, True
    return used, total, False


def combine(values: Sequence[tuple[int, bool]]) -> tuple[int, int]:
    """See the module contract: (words used, value) of the number the run starts with; `values`
    is not empty."""
    used, total, ended = _group(values, 0)
    if used == 0:  # "тысяча" on its own, or starting the run
        used, total, ended = 1, values[0][0], values[0][1]
        if total != THOUSAND:
            return used, total
        total = 1
        used = 0
    if ended or used >= len(values) or values[used][0] != THOUSAND:
        return used, total
    multiplier_ordinal = values[used][1]
    used, total = used + 1, total * THOUSAND
    if multiplier_ordinal:
        return used, total
    more, rest, _ = _group(values, used)
    return used + more, total + rest
