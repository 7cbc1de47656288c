"""Numbers in words as the trackers read them: every cardinal from 0 to 1000 in any case is
its value, ordinals too, and a run of number words is one number (issue 25)."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from salesbot_poller.config.trackers import TrackerConfig
from salesbot_poller.trackers import Matcher, Utterance
from salesbot_poller.trackers.morph import Lemmas, tokens


def split(text: str) -> list[str]:
    return text.split()


UNITS = split("ноль один два три четыре пять шесть семь восемь девять")
TEENS = split(
    "десять одиннадцать двенадцать тринадцать четырнадцать пятнадцать шестнадцать семнадцать восемнадцать девятнадцать"
)
TENS = split("_ _ двадцать тридцать сорок пятьдесят шестьдесят семьдесят восемьдесят девяносто")
HUNDREDS = split("_ сто двести триста четыреста пятьсот шестьсот семьсот восемьсот девятьсот")


def in_words(n: int) -> str:
    if n == 1000:
        return "тысяча"
    if n == 0:
        return "ноль"
    hundreds, rest = divmod(n, 100)
    words = [HUNDREDS[hundreds]] if hundreds else []
    if 10 <= rest < 20:
        words.append(TEENS[rest - 10])
    else:
        tens, units = divmod(rest, 10)
        words += ([TENS[tens]] if tens else []) + ([UNITS[units]] if units else [])
    return " ".join(words)


def values(text: str, lemmas: Lemmas) -> list[set[str]]:
    return [set(t.keys) for t in tokens(text, lemmas)]


def test_every_cardinal_from_0_to_1000_in_words_is_one_token_of_its_value() -> None:
    lemmas = Lemmas()
    wrong = [
        n
        for n in range(1001)
        if str(n) not in set.union(*values(in_words(n), lemmas)) or len(values(in_words(n), lemmas)) != 1
    ]
    assert wrong == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("двадцати пяти", "25"),
        ("двумстам", "200"),
        ("пятидесяти", "50"),
        ("трёхсот сорока", "340"),
        ("двадцать пятого", "25"),
        ("сто первом", "101"),
        ("десятого", "10"),
        ("две тысячи пятьсот", "2500"),
        ("десять тысяч", "10000"),
        ("10 тысяч", "10000"),
        ("10 000", "10000"),
        ("10-го", "10"),
        ("тысячу двести", "1200"),
    ],
)
def test_case_forms_ordinals_and_thousands_read_as_one_value(text: str, value: str) -> None:
    found = values(text, Lemmas())
    assert len(found) == 1 and value in found[0], found


def test_units_in_a_row_stay_separate_numbers() -> None:
    assert [sorted(k for k in keys if k.isdigit()) for keys in values("два три дня", Lemmas())] == [["2"], ["3"], []]
    assert [sorted(k for k in keys if k.isdigit()) for keys in values("двадцать тридцать", Lemmas())] == [
        ["20"],
        ["30"],
    ]


def test_importing_the_trackers_loads_no_dictionary() -> None:
    code = "import sys, salesbot_poller.trackers, salesbot_poller.config; print('pymorphy3' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"


def test_one_matcher_shared_by_threads_gives_each_the_same_hits() -> None:
    matcher = Matcher(
        [TrackerConfig.model_validate({"name": "Скидка", "phrases": ["скидка", "10 процентов", "сделать дешевле"]})]
    )
    lines = [
        Utterance("client", float(i), f"скидку {i} раз просили, сделайте дешевле, десять процентов") for i in range(300)
    ]
    expected = matcher.hits(lines)
    results: list[object] = []

    def work() -> None:
        fresh = Matcher(matcher.trackers)  # a cold cache filled by four threads at once
        results.append(fresh.hits(lines))
        results.append(matcher.hits(lines))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(expected) == 900 and results == [expected] * 8
