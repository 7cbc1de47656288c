"""Phone numbers masked in the chats (`telegram.mask_phones`), and personal data
replaced before the chat model sees the transcript (`analysis.redact`, `redact_pii`)."""

from __future__ import annotations

import json
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from salesbot_poller.config import MaskMode, parse_config
from salesbot_poller.domain import CallContext
from salesbot_poller.errors import ConfigError
from salesbot_poller.lanes import run_once
from salesbot_poller.pipeline.messages import (
    mask_phone,
    render_callback,
    render_conversation,
    render_escalation,
    render_missed,
    render_transcript_caption,
)
from salesbot_poller.reports.digest import render_digest
from salesbot_poller.reports.team_stats import ManagerFigures
from salesbot_poller.services.analysis import build_user_message
from salesbot_poller.services.redact_pii import KINDS, redact, redact_kinds
from salesbot_poller.store import Call, Store
from tests.builder import build_rig
from tests.conftest import Servers, run_cli
from tests.fakes import make_mp3, validate_telegram_html
from tests.fakes.openai_api import default_analysis
from tests.loopback_app import add_call, at
from tests.test_analysis import CONTEXT as ANALYSIS_CONTEXT
from tests.test_analysis import analyzer
from tests.test_card_golden import ANALYSIS, CONTEXT

FULL = "+79991110001"  # as amoCRM wrote it
SHOWN = "+7 999 111-00-01"  # as an unmasked message shows it (`phones.display`)
MASKED = "+7 999 ***-**-01"
MODES: tuple[MaskMode, ...] = ("cards", "all", "none")


def shown(parts: list[str]) -> str:
    return "\n".join(validate_telegram_html(part) for part in parts)


# --- masking ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("+79991110004", "+7 999 ***-**-04"),
        ("89991110004", "+7 999 ***-**-04"),
        ("+7 (999) 111-00-04", "+7 999 ***-**-04"),
        ("8 (495) 123-45-67", "+7 495 ***-**-67"),
        ("9991110004", "+7 999 ***-**-04"),  # no country code: a Russian mobile all the same
        ("+44 20 7946 0958", "+44 ** **** **58"),  # not Russian: first 2-4 and last 2 kept
        ("+380441234567", "+38********67"),
        ("+7 999 111-00-04 доб. 12", "+7 999 ***-**-04 доб. 12"),  # the office's extension kept
        ("+7999", "+7***"),  # too short to keep both ends
        ("", ""),
    ],
)
def test_a_masked_number_keeps_the_codes_and_the_last_two_digits(phone: str, masked: str) -> None:
    assert mask_phone(phone) == masked


@pytest.mark.parametrize("mode", MODES)
def test_the_card_masks_unless_none_and_the_alert_and_escalation_only_with_all(mode: MaskMode) -> None:
    card = render_conversation(CONTEXT, ANALYSIS, UTC, mask=mode)
    alert = render_missed(CONTEXT, UTC, mode)
    escalation = render_escalation(CONTEXT, 15, UTC, mode)
    caption = render_transcript_caption(CallContext(**{**CONTEXT.__dict__, "entity_name": ""}), UTC, mode)
    card_hides, alert_hides = mode != "none", mode == "all"
    for parts, hides in ((card, card_hides), (alert, alert_hides), (escalation, alert_hides), ([caption], card_hides)):
        text = shown(parts)
        assert (MASKED in text, SHOWN in text) == (hides, not hides), (mode, text)
        if hides:  # nowhere in the HTML either: no tel: link, no attribute carries it
            assert "1110001" not in "".join(parts) and "tel:" not in "".join(parts)
    assert "☎️" not in shown(render_callback("Мария", CONTEXT.started_at + 60, CONTEXT.started_at, UTC))


def test_a_number_in_a_cards_name_is_masked_with_the_card() -> None:
    named = CallContext(**{**CONTEXT.__dict__, "entity_name": "Контакт +7 (916) 123-45-67", "entity_kind": "contacts"})
    assert "💼 Контакт: Контакт +7 916 ***-**-67" in shown(render_conversation(named, ANALYSIS, UTC))
    assert "Контакт +7 916 123-45-67" in shown(render_conversation(named, ANALYSIS, UTC, mask="none"))
    assert "Контакт +7 916 123-45-67" in shown(render_missed(named, UTC)), "the alert keeps it, to call back"


@pytest.mark.parametrize("mode", MODES)
def test_the_digest_masks_a_number_standing_for_a_name_like_the_card(mode: MaskMode) -> None:
    day = ManagerFigures("Иван", calls=1, scores=[40], weakest_call=(40, FULL, "https://acme.amocrm.ru/leads/detail/1"))
    text = shown(render_digest([day], 1795600800 - 86400, 1795600800, UTC, mode))
    assert (MASKED in text) == (mode != "none") and (SHOWN in text) == (mode == "none")


@pytest.mark.parametrize("mode", MODES)
def test_through_the_pipeline_cards_alerts_and_escalations_follow_the_mode(tmp_path: Path, mode: MaskMode) -> None:
    rig = build_rig(tmp_path, telegram={"mask_phones": mode}, poller={"missed_call_sla_minutes": 15})
    add_call(rig, 1, phone="+7 (999) 111-00-01")  # answered: a card
    add_call(rig, 2, minutes=-2, duration=0, status=6, phone="+7 (999) 111-00-02")  # missed: an alert
    run_once(rig.app, at(0))
    run_once(rig.app, at(30))  # past the SLA: the escalation
    assert len(rig.notifier.sent) == 3, rig.notifier.sent
    card, alert, escalation = (next(m for m in rig.notifier.sent if k in m) for k in ("Оценка", "Пропущен", "Не пере"))
    assert ("+7 999 ***-**-01" in card) == (mode != "none") and ("+7 999 111-00-01" in card) == (mode == "none")
    for message in (alert, escalation):
        assert ("+7 999 ***-**-02" in message) == (mode == "all")
        assert ("+7 999 111-00-02" in message) == (mode != "all")


@pytest.mark.parametrize("mode", MODES)
def test_a_storm_summary_masks_like_the_alerts(tmp_path: Path, mode: MaskMode) -> None:
    rig = build_rig(tmp_path, telegram={"mask_phones": mode, "max_alerts_per_cycle": 2})
    for n in range(1, 4):
        add_call(rig, n, minutes=-2, duration=0, status=6, phone=f"+7999000000{n}")
    run_once(rig.app, at(0))
    (summary,) = rig.notifier.sent
    assert "Шквал пропущенных звонков: 3" in summary
    assert ("+7 999 ***-**-01" in summary) == (mode == "all") and ("+7 999 000-00-01" in summary) == (mode != "all")


def test_mask_phones_takes_only_the_three_modes() -> None:
    with pytest.raises(ConfigError, match=r"telegram\.mask_phones: Input should be 'cards', 'all' or 'none'"):
        parse_config({"telegram": {"mask_phones": "alerts"}}, {}, require_secrets=False)
    assert parse_config({}, {}, require_secrets=False).telegram.mask_phones == "cards"


# --- redaction -------------------------------------------------------------------------------

EVERY = list(KINDS)


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("Мой номер +7 (916) 123-45-67, звоните.", "Мой номер [телефон], звоните."),
        ("запишите: 8 916 123 45 67, я жду", "запишите: [телефон], я жду"),
        ("89161234567", "[телефон]"),
        ("тел. 8-916-123-45-67", "тел. [телефон]"),
        ("городской (495) 123-45-67", "городской [телефон]"),
        ("восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь", "[телефон]"),
        ("плюс семь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь.", "[телефон]."),
        ("восемь, девятьсот шестнадцать, сто двадцать три, сорок пять, шестьдесят семь", "[телефон]"),
        ("Записывайте: восемь 916 123 45 67 — это мобильный", "Записывайте: [телефон] — это мобильный"),
        ("позвоните 8 916 123 45 67 2 раза", "позвоните [телефон] 2 раза"),
        ("карта 4276 3800 1234 5678, срок до 12/27", "карта [карта], срок до 12/27"),
        ("номер карты 4276-3800-1234-5678", "номер карты [карта]"),
        ("карта мир 2200 1234 5678 9012 345", "карта мир [карта]"),
        ("паспорт 45 08 123456", "паспорт [паспорт]"),
        ("Паспорт: серия 4508 номер 123456, выдан", "Паспорт: серия [паспорт], выдан"),
        ("серия 45 08, номер 123456", "серия [паспорт]"),
        ("почта ivan.petrov@mail.ru, жду", "почта [email], жду"),
        ("пишите на иван собака мейл точка ру", "пишите на [email]"),
        ("иван точка петров собака яндекс точка ру, спасибо", "[email], спасибо"),
    ],
)
def test_each_kind_is_replaced_by_its_placeholder(text: str, redacted: str) -> None:
    assert redact(text, EVERY) == redacted


@pytest.mark.parametrize(
    "text",
    [
        "Стоимость двести тысяч рублей, со скидкой сто пятьдесят тысяч",
        "за партию 150 000, за две — 280 000 рублей",
        "бюджет 4 500 000 000 рублей на год",
        "8 500 000, 9 000 000 или 12 000 000",
        "по 100, 200, 300, 400 рублей за штуку",
        "200 штук по 1 500, итого 300 000",
        "двадцать пять коробок и ещё сто двадцать",
        "поставим 12.05.2026 в 15:30, или 25 05 2026",
        "к двадцать пятому мая, две тысячи двадцать шестого года",
        "разговор длился 1:30:00, перезвоню через 15 минут",
        "в 2025 2026 годах, заказ № 12345",
        "ИНН 7707083893",
        "звоните с 9 до 18, обед с 13:00 до 14:00",
    ],
)
def test_prices_quantities_dates_and_durations_survive(text: str) -> None:
    assert redact(text, EVERY) == text


def test_only_the_asked_kinds_are_looked_for() -> None:
    text = "ivan@mail.ru, 8 916 123 45 67, карта 4276 3800 1234 5678"
    assert redact(text, ["phone", "card"]) == "ivan@mail.ru, [телефон], карта [карта]"
    assert redact(text, ["email"]) == "[email], 8 916 123 45 67, карта 4276 3800 1234 5678"
    assert redact(text, []) == text
    # A passport, not asked for, still never goes out as itself: it reads as a 10-digit number.
    assert redact("паспорт 45 08 123456", ["phone"]) == "паспорт [телефон]"
    with pytest.raises(ValueError, match="unknown kind 'inn'"):
        redact_kinds(["phone", "inn"])


def test_analysis_redact_is_a_list_of_the_four_kinds() -> None:
    assert parse_config({}, {}, require_secrets=False).analysis.redact == ["phone", "card"]
    config = parse_config({}, {"SALESBOT_ANALYSIS_REDACT": "email, phone,email"}, require_secrets=False)
    assert config.analysis.redact == ["email", "phone"]
    assert parse_config({"analysis": {"redact": []}}, {}, require_secrets=False).analysis.redact == []
    with pytest.raises(ConfigError, match=r"analysis\.redact\[2\]: Input should be 'phone', 'email', 'card' or"):
        parse_config({"analysis": {"redact": ["phone", "snils"]}}, {}, require_secrets=False)


def test_the_user_message_holds_placeholders_and_the_call_facts_stay() -> None:
    context = CallContext(**{**ANALYSIS_CONTEXT.__dict__, "entity_name": "+79161234567"})
    message = build_user_message("Клиент: мой 8 916 123 45 67, бюджет 150 000", context, UTC, ["phone"])
    assert "1234567" not in message and "Клиент: [телефон]." in message
    assert "мой [телефон], бюджет 150 000" in message and "2026-11-25 (среда), длительность 2:05" in message


def test_the_model_never_sees_a_number_and_the_stored_quotes_never_hold_one(servers: Servers) -> None:
    def made_up(body: dict[str, Any]) -> dict[str, Any]:  # a model quoting a number it never got
        answer = default_analysis(body)
        answer["rubric"] = {k: {**v, "evidence": "перезвоните на 8 916 123 45 67"} for k, v in answer["rubric"].items()}
        answer["summary"] = "Клиент оставил карту 4276 3800 1234 5678"
        return answer

    servers.openai.analysis_fn = made_up
    result = analyzer(servers).analyse("Клиент: запишите 8 916 123 45 67 и карту 4276 3800 1234 5678", ANALYSIS_CONTEXT)
    (request,) = servers.openai.chat_requests
    sent = json.dumps(request["messages"], ensure_ascii=False)
    assert "916" not in sent and "4276" not in sent and "запишите [телефон] и карту [карта]" in sent
    assert all(r.evidence == "перезвоните на [телефон]" for r in result.rubric)
    assert result.summary == "Клиент оставил карту [карта]"


@pytest.mark.slow
def test_end_to_end_the_phone_said_in_the_call_never_reaches_the_model_and_the_card_is_masked(
    servers: Servers,
) -> None:
    now = int(time.time())
    amo, rec = servers.amo, servers.recordings
    amo.add_user(555, "Иван Петров")
    amo.add_entity("lead", 7001, "ООО Ромашка", 555)
    amo.add_entity("contact", 8002, "Анна", 555)
    amo.add_call(
        entity_type="lead",
        entity_id=7001,
        note_id=101,
        duration=125,
        phone=FULL,
        link=rec.add("/mango/rec-101.mp3", make_mp3(3.0)),
        created_at=now - 600,
        responsible_user_id=555,
    )
    amo.add_call(  # missed: its alert keeps the full number
        entity_type="contact",
        entity_id=8002,
        note_id=102,
        duration=0,
        phone="+79991110002",
        link=None,
        call_status=6,
        created_at=now - 300,
        responsible_user_id=555,
    )
    said = "Клиент: перезвоните мне на восемь 916 123 45 67, бюджет двести тысяч рублей, почта ivan@mail.ru"
    servers.openai.transcribe_fn = lambda data, filename, fields: said

    result = run_cli("once", config=servers.write_config())
    assert result.returncode == 0, result.stderr
    (request,) = servers.openai.chat_requests
    user = request["messages"][-1]["content"]
    assert "перезвоните мне на [телефон], бюджет двести тысяч рублей, почта ivan@mail.ru" in user
    assert "916" not in json.dumps(request, ensure_ascii=False), "no part of the number reaches the chat model"
    (card,) = [m for m in servers.telegram.messages if "Оценка" in m["visible_text"]]
    (alert,) = [m for m in servers.telegram.messages if "Пропущенный" in m["visible_text"]]
    assert f"☎️ {MASKED}" in card["visible_text"] and "1110001" not in card["text"]
    assert "☎️ +7 999 111-00-02 — перезвоните клиенту" in alert["visible_text"]
    store = Store.open(f"sqlite:///{servers.tmp}/state/salesbot.db", 0)
    try:  # the transcript is kept as heard: only what goes to the chat model is redacted
        stored = [call.transcript for call in Call.select() if call.transcript]
    finally:
        store.close()
    assert stored == [said]


@pytest.mark.parametrize(
    "filler",
    [
        *("иван точка ", "8 916 ", "a.b@", "серия 12 ", "восемь ", "ivan, собака, ", "девятьсот, ээ, десять, "),
        *("Клиент: сто один\nМенеджер: сто один\n", "Клиент: двадцать\nМенеджер: двадцать, да\n"),
    ],
)
def test_an_hour_of_odd_speech_is_redacted_in_linear_time(filler: str) -> None:
    text = filler * (200_000 // len(filler))  # about an hour of speech, the worst case repeated
    started = time.perf_counter()
    redact(text, EVERY)
    # A guard against catastrophic backtracking (a bad pattern took ~150 s here), not a speed
    # target: the bound is far above what a linear pass takes on any machine.
    assert time.perf_counter() - started < 60, "no pattern may backtrack over the whole transcript"
