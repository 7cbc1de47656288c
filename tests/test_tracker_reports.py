"""Trackers for people: the weekly report's block (top trackers and the change against the
week before) and the bot's `/tracker NAME [7|30]`, through the real Telegram client and the
loopback Telegram server."""

from __future__ import annotations

import pytest

from salesbot_poller.app import build_updates
from salesbot_poller.config import TrackerConfig
from salesbot_poller.pipeline import tracking
from salesbot_poller.pipeline.context import Cycle
from salesbot_poller.reports import weekly
from salesbot_poller.sandbox.team import store_calls
from salesbot_poller.store import Call
from salesbot_poller.trackers import Hit, Matcher
from tests.builder import Rig
from tests.conftest import CHAT_ID, Servers
from tests.fakes import validate_telegram_html
from tests.loopback_app import loopback_rig
from tests.test_bot import BOSS, NOW, answered_as_reply, ask, team
from tests.test_weekly import moment, weekly_rig

TRACKERS = [
    TrackerConfig(name="Конкурент", phrases=["у конкурентов дешевле"], alert=True),
    TrackerConfig(name="Скидка", phrases=["скидку"]),
    TrackerConfig(name="Запись разговора", phrases=["разговор записывается"], speaker="manager", expect=True),
]


def with_trackers(rig: Rig) -> Rig:
    rig.app.config = rig.app.config.model_copy(update={"trackers": TRACKERS})
    rig.app.matcher = None
    return rig


def call_at(at: int) -> int:
    return int(Call.get(Call.event_created_at == at).id)


def test_the_weekly_report_shows_the_top_trackers_with_the_change_against_the_week_before(servers: Servers) -> None:
    rig = with_trackers(weekly_rig(servers))
    store = rig.app.store
    competitor = Hit("Конкурент", "client", "у конкурентов дешевле", 12.0)
    store.replace_trackers(call_at(moment(10)), [competitor], [])  # the week before
    store.replace_trackers(call_at(moment(16)), [competitor, competitor], ["Запись разговора"])
    store.replace_trackers(call_at(moment(17)), [competitor, Hit("Скидка", "client", "скидку", None)], [])
    store.replace_trackers(call_at(moment(23)), [competitor], [])  # the week after: not counted

    weekly.run(rig.app, Cycle(app=rig.app, now=moment(23, 9)))

    (message,) = servers.telegram.messages
    validate_telegram_html(message["text"])
    assert (
        "🏷 Трекеры (звонков, к неделе раньше)\n🏷 Конкурент: 2 (+1)\n🏷 Скидка: 1 (+1)\n"
        "⚠️ не сказано Запись разговора: 1 (+1)"
    ) in message["visible_text"]


def test_a_week_without_hits_has_no_tracker_block(servers: Servers) -> None:
    rig = with_trackers(weekly_rig(servers))
    weekly.run(rig.app, Cycle(app=rig.app, now=moment(23, 9)))
    (message,) = servers.telegram.messages
    assert "Трекеры" not in message["visible_text"]


@pytest.fixture
def rig(servers: Servers) -> Rig:
    rig = loopback_rig(servers, paced=False, telegram={"command_chats": [CHAT_ID], "admins": [BOSS]})
    rig.app.updates = build_updates(rig.app.config)
    store_calls(rig.app.store, team(), NOW - 60 * 3600)
    with_trackers(rig)
    # The stored transcripts matched as `trackers --apply` does.
    tracking.reapply(rig.app.store, rig.app.config, Matcher(TRACKERS), NOW - 40 * 86400, NOW + 1, lambda _: None)
    return rig


def test_tracker_gives_calls_per_manager_and_the_last_hits_with_their_words(rig: Rig, servers: Servers) -> None:
    text = answered_as_reply(servers, ask(rig, servers, "/tracker конкурент"))
    assert text.startswith("🏷 Конкурент · за 7 дней")
    assert "👤 Иван Петров — звонков с фразой: 1" in text and "Мария" not in text
    competitor = call_at(NOW - 30 * 3600)
    assert f"· Иван Петров · «У конкурентов дешевле» · /call {competitor}" in text


def test_tracker_of_an_expected_phrase_counts_the_calls_where_it_was_not_said(rig: Rig, servers: Servers) -> None:
    text = answered_as_reply(servers, ask(rig, servers, "/tracker Запись разговора 30"))
    assert "за 30 дней" in text
    assert "👤 Иван Петров — звонков с фразой: 0, не сказано: 2" in text
    assert "👤 Мария Сидорова — звонков с фразой: 0, не сказано: 1" in text
    assert "Последние" not in text


def test_tracker_with_an_unknown_name_lists_the_known_ones_and_help_lists_it(rig: Rig, servers: Servers) -> None:
    text = answered_as_reply(servers, ask(rig, servers, "/tracker Неизвестный"))
    assert "нет трекера «Неизвестный»; есть: Конкурент, Скидка, Запись разговора" in text
    assert "/tracker НАЗВАНИЕ [7|30]" in answered_as_reply(servers, ask(rig, servers, "/help"))
    assert "можно 7 или 30" in answered_as_reply(servers, ask(rig, servers, "/tracker Скидка 14"))


def test_the_card_sent_again_by_call_shows_its_tracker_lines(rig: Rig, servers: Servers) -> None:
    competitor = call_at(NOW - 30 * 3600)
    text = answered_as_reply(servers, ask(rig, servers, f"/call {competitor}"))
    assert "🏷 Конкурент: «У конкурентов дешевле»\n⚠️ не сказано: Запись разговора" in text
