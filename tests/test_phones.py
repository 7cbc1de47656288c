"""Phone numbers however amoCRM wrote them: one normal form to compare (`poller.exclude_phones`,
callbacks, `forget --phone`, `/find`), one way to show them (`+7 916 123-45-67`, masked
`+7 916 ***-**-67`); other countries' numbers kept as written and never taken for Russian.
Messages go through the real Telegram client to the fake Bot API, calls come from the fake
amoCRM."""

from __future__ import annotations

from pathlib import Path

import pytest

from salesbot_poller import phones
from salesbot_poller.app import build_updates
from salesbot_poller.cli.forget import ForgetOutcome, forget, number_key
from salesbot_poller.lanes import run_once
from salesbot_poller.pipeline.profiles import match
from salesbot_poller.sandbox.team import TeamCall, store_calls
from salesbot_poller.store import Call
from tests.builder import already_running
from tests.conftest import CHAT_ID, Servers
from tests.loopback_app import add_call, at, calls, loopback_rig
from tests.test_bot import BOSS, NOW, answered_as_reply, ask
from tests.test_profiles import config_with, facts

RUSSIAN_FORMS = ["79161234567", "89161234567", "8 (916) 123-45-67", "+7 916 123 45 67", "+7 (916) 123-45-67",
                 "9161234567", "007 916 1234567"]  # fmt: skip
SHOWN, MASKED = "+7 916 123-45-67", "+7 916 ***-**-67"
UK, US = "+44 20 7946 0958", "+1 207 946 0958"  # the same last 10 digits, two different numbers


@pytest.mark.parametrize("written", RUSSIAN_FORMS)
def test_every_form_of_a_russian_number_is_one_number_shown_one_way(written: str) -> None:
    assert phones.key(written) == "79161234567"
    assert phones.display(written) == SHOWN
    assert phones.mask(written) == MASKED  # docs/privacy.md "Masking and redaction": `+7 999 ***-**-04`


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


# --- where numbers are shown -----------------------------------------------------------------


def visible(servers: Servers) -> list[str]:
    return [message["visible_text"] for message in servers.telegram.messages]


def test_the_alert_shows_a_russian_number_grouped_and_the_card_masks_it_the_documented_way(servers: Servers) -> None:
    rig = loopback_rig(servers, paced=False)
    already_running(rig.app)  # alerted one by one, not the first start's summary
    add_call(rig, 1, minutes=-2, duration=0, status=6, phone="79161234567")
    add_call(rig, 2, minutes=-1, duration=0, status=6, phone=UK)
    add_call(rig, 3, minutes=-1, phone="89161234567")
    run_once(rig.app, at(0))
    alert, foreign, card = visible(servers)
    assert f"☎️ {SHOWN} — перезвоните клиенту" in alert and "79161234567" not in alert
    assert f"☎️ {UK} — перезвоните клиенту" in foreign
    assert f"☎️ {MASKED}" in card and "1234567" not in card  # telegram.mask_phones = "cards"


def test_an_unmasked_card_and_a_number_in_a_cards_name_are_grouped_too(servers: Servers) -> None:
    rig = loopback_rig(servers, paced=False, telegram={"mask_phones": "none"})
    add_call(rig, 1, minutes=-1, phone="8 (916) 123-45-67")
    event = rig.source.events[0]
    rig.source.names[(event.entity_type, event.entity_id)] = "Контакт 79161234567"  # amoCRM names it so
    run_once(rig.app, at(0))
    (card,) = visible(servers)
    assert f"☎️ {SHOWN}" in card and f"Контакт {SHOWN}" in card


# --- where numbers are compared, through the lanes and the commands ----------------------------


def test_a_callback_is_the_same_number_in_another_form_and_never_another_countrys(servers: Servers) -> None:
    rig = loopback_rig(servers, paced=False, poller={"missed_call_sla_minutes": 15})
    add_call(rig, 1, minutes=-2, duration=0, status=6, phone=UK)
    add_call(rig, 2, minutes=-2, duration=0, status=6, phone="79161234567")
    run_once(rig.app, at(0))
    add_call(rig, 3, minutes=3, direction="out", duration=40, phone=US)  # the same last 10 digits as UK
    add_call(rig, 4, minutes=3, direction="out", duration=40, phone="8 (916) 123-45-67")
    run_once(rig.app, at(5))
    uk, russian, _, callback = calls()
    assert russian.callback_call_id == callback.id
    assert uk.callback_call_id is None, "a call to the US is no callback to the UK"
    run_once(rig.app, at(20))
    assert sum("Не перезвонили" in text for text in visible(servers)) == 1  # the UK number's escalation


def test_forget_finds_the_number_in_any_form_and_not_another_countrys(servers: Servers, tmp_path: Path) -> None:
    rig = loopback_rig(servers, paced=False)
    add_call(rig, 1, minutes=-3, duration=0, status=6, phone="79161234567")
    add_call(rig, 2, minutes=-2, duration=0, status=6, phone=UK)
    add_call(rig, 3, minutes=-1, duration=0, status=6, phone=US)
    run_once(rig.app, at(0))
    now = int(at(10).timestamp())
    store, lines = rig.app.store, []

    def run(number: str) -> ForgetOutcome:
        return forget(store, number, now, lines.append, lambda _: True, audio_dir=tmp_path, default_chat="")

    assert run("8 (916) 123-45-67") is ForgetOutcome.DONE
    assert run(UK) is ForgetOutcome.DONE
    remaining = [call.phone for call in Call.select()]
    assert remaining.count(None) == 2 and US in remaining
    lines.clear()
    assert run("+7 916 123 45 67") is ForgetOutcome.NOTHING
    assert "forget: ***-**-67: nothing left to remove" in lines, "the cleared call is found again by its hash"
    assert Call.get(Call.id == 1).forgotten_as == number_key(store, "9161234567")  # what earlier versions hashed
    assert not any("1234567" in line or "7946" in line for line in lines)  # never printed in full


def test_find_with_a_number_in_any_form_lists_that_numbers_calls(servers: Servers) -> None:
    rig = loopback_rig(servers, paced=False, telegram={"command_chats": [CHAT_ID], "admins": [BOSS]})
    rig.app.updates = build_updates(rig.app.config)
    hour = 3600
    store_calls(rig.app.store, [
        TeamCall(NOW - 5 * hour, "Мария Сидорова", 556, phone="79161234567", client="Новый клиент"),
        TeamCall(NOW - 4 * hour, "Иван Петров", 555, 60, {"greeting": "done"}, phone="+7 916 123-45-67",
                 client="ИП Лесной"),
        TeamCall(NOW - 3 * hour, "Иван Петров", 555, phone=US, client="Mr Smith"),
    ], NOW - 10 * hour)  # fmt: skip
    text = answered_as_reply(servers, ask(rig, servers, "/find 8 (916) 123-45-67"))
    assert f"Звонков с номером {MASKED}: 2" in text  # masked like the cards (telegram.mask_phones)
    lines = [line for line in text.splitlines() if "/call" in line]
    assert [line.rsplit(" ", 1)[1] for line in lines] == ["2", "1"]  # newest first
    assert "ИП Лесной" in lines[0] and "Новый клиент" in lines[1]
    assert "Звонков с номером +44 ** **** **58: 0" in answered_as_reply(servers, ask(rig, servers, f"/find {UK}"))
    assert "Найдено: 0" in answered_as_reply(servers, ask(rig, servers, "/find 2024")), "a word, not a number"
