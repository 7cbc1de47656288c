"""Phone numbers however amoCRM wrote them: one normal form to compare (`poller.exclude_phones`,
callbacks, `forget --phone`, `/find`), one way to show them (`+7 916 123-45-67`, masked
`+7 916 ***-**-67`); other countries' numbers kept as written and never taken for Russian.
Messages go through the real Telegram client to the fake Bot API, calls come from the fake
amoCRM."""

from __future__ import annotations

from pathlib import Path

import pytest

from salesbot_poller import phones
from salesbot_poller.cli.forget import ForgetOutcome, forget
from salesbot_poller.lanes import run_once
from salesbot_poller.pipeline.profiles import match
from salesbot_poller.store import Call
from tests.conftest import Servers
from tests.loopback_app import add_call, at, calls, loopback_rig
from tests.test_profiles import config_with, facts

RUSSIAN_FORMS = ["79161234567", "89161234567", "8 (916) 123-45-67", "+7 916 123 45 67", "+7 (916) 123-45-67",
                 "9161234567", "007 916 1234567"]  # fmt: skip
SHOWN, MASKED = "+7 916 123-45-67", "+7 916 ***-**-67"
UK, US = "+44 20 7946 0958", "+1 207 946 0958"  # the same last 10 digits, two different numbers


@pytest.mark.parametrize("written", RUSSIAN_FORMS)
def test_every_form_of_a_russian_number_is_one_number_shown_one_way(written: str) -> None:
    assert phones.key(written) == "79161234567"
    assert phones.display(written) == SHOWN
    assert phones.mask(written) == MASKED  # README "Masking and redaction": `+7 999 ***-**-04`


@pytest.mark.parametrize(
    ("written", "key", "masked"),
    [
        (UK, "442079460958", "+44 ** **** **58"),
        ("+380 44 123 4567", "380441234567", "+380 ** *** **67"),
        ("+375 29 123-45-67", "375291234567", "+375 ** ***-**-67"),
        (US, "12079460958", "+1 *** *** **58"),
        ("+8 916 123 45 67", "89161234567", "+8 9** *** ** 67"),  # "+8…" is not Russian's trunk 8
    ],
)
def test_another_countrys_number_is_kept_as_written_and_never_regrouped_as_russian(
    written: str, key: str, masked: str
) -> None:
    assert phones.display(written) == written
    assert phones.key(written) == key
    assert phones.mask(written) == masked


def test_kazakhstan_is_plus_7_too_and_grouped_the_same() -> None:
    for written in ("+7 727 123 45 67", "87271234567", "77271234567"):
        assert phones.display(written) == "+7 727 123-45-67" and phones.mask(written) == "+7 727 ***-**-67"
        assert phones.key(written) == "77271234567"


def test_international_prefixes_and_extensions() -> None:
    assert phones.key("0044 20 7946 0958") == phones.key("8 10 44 20 7946 0958") == phones.key(UK)
    assert phones.key(UK) != phones.key(US)
    with_extension = "8 (916) 123-45-67 доб. 12"
    assert phones.key(with_extension) == "79161234567"
    assert phones.display(with_extension) == SHOWN + " доб. 12"
    assert phones.mask(with_extension) == MASKED + " доб. 12"
    two = "89161234567, 89167654321"  # not one number: shown as written, masked all through
    assert phones.display(two) == two and "1234567" not in phones.mask(two) and "7654321" not in phones.mask(two)
    assert phones.key("") == "" and not phones.is_full(phones.key("101"))


def test_dialable_is_a_number_surely_meant_as_a_phone() -> None:
    assert phones.dialable("8 (916) 123-45-67") == phones.dialable("79161234567") == "79161234567"
    assert phones.dialable(UK) == "442079460958"
    assert phones.dialable("2024") == phones.dialable("12345678") == phones.dialable("доставка") == ""


# --- where numbers are compared ------------------------------------------------------------


def test_an_excluded_number_is_matched_in_any_form_and_not_by_its_last_10_digits_alone() -> None:
    config = config_with([], exclude_phones=["8 (916) 123-45-67", UK])
    for written in RUSSIAN_FORMS:
        assert match(config, facts(phone=written))[1] == "excluded number (poller.exclude_phones)", written
    assert match(config, facts(phone="0044 20 7946 0958"))[1] == "excluded number (poller.exclude_phones)"
    assert match(config, facts(phone=US))[1] is None, "a US client is not the UK office"
    assert match(config_with([], exclude_phones=["офис"]), facts(phone="скрыт"))[1] is None, "no digits: no number"
