"""The bot's commands: the real telebot client long-polls the loopback Telegram's
`getUpdates` and answers the head of sales, only in `telegram.command_chats` and only to
`telegram.admins`, once per update even across a restart."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from salesbot_poller import bot_lane as bot
from salesbot_poller.app import build_updates
from salesbot_poller.cli.daemon import Daemon
from salesbot_poller.sandbox.team import TeamCall, store_calls
from salesbot_poller.services.throttle import ChatPacer
from salesbot_poller.store import Store
from tests.builder import T0, Rig
from tests.conftest import CHAT_ID, Servers, assert_no_secret
from tests.fakes import validate_telegram_html
from tests.loopback_app import loopback_rig
from tests.test_daemon import wait_for

BOSS = 4242  # the head of sales' Telegram user id
STRANGER = 777
OTHER_CHAT = "-1009999999999"
NOW = int(T0.timestamp())  # 2026-11-25 09:00 UTC
HOUR = 3600
GOOD = dict.fromkeys(("greeting", "needs", "presentation", "objections", "next_step", "closing"), "done")


def team() -> list[TeamCall]:
    ivan, maria = ("Иван Петров", 555), ("Мария Сидорова", 556)
    return [
        TeamCall(NOW - 50 * HOUR, *ivan, 200, GOOD | {"objections": "missed", "closing": "missed"}, ("Дорого",),
                 "Менеджер: Добрый день. Клиент: Нужна доставка стеллажей в Казань к пятнице.", client="ООО Ромашка"),
        TeamCall(NOW - 30 * HOUR, *ivan, 90, GOOD | {"needs": "missed", "objections": "missed", "next_step": "missed"},
                 (), "Клиент: У конкурентов дешевле. Менеджер: Понимаю.", client="ИП Сидоров"),
        TeamCall(NOW - 20 * HOUR, *maria, 300, GOOD, (), "Клиент: Пришлите счёт. Менеджер: Отправлю сегодня.",
                 client="ООО Лютик"),
        TeamCall(NOW - 10 * HOUR, *maria, phone="+79161234567", client="Новый клиент"),  # missed, not returned
        TeamCall(NOW - 9 * HOUR, *ivan, phone="+79160000001", returned_by=5),  # missed, returned
        TeamCall(NOW - 8 * HOUR, *ivan, 40, direction="out", phone="+79160000001"),
    ]  # fmt: skip


@pytest.fixture
def rig(servers: Servers) -> Rig:
    rig = loopback_rig(servers, paced=False, telegram={"command_chats": [CHAT_ID], "admins": [BOSS]})
    rig.app.updates = build_updates(rig.app.config)
    store_calls(rig.app.store, team(), NOW - 60 * HOUR)
    return rig


def ask(rig: Rig, servers: Servers, text: str, *, user: int = BOSS, chat: str = CHAT_ID) -> list[dict[str, Any]]:
    """Send `text` as `user` in `chat`, let the bot read and answer; the messages it sent."""
    before = len(servers.telegram.messages)
    update_id = servers.telegram.push_message(chat, user, text)
    for update in bot.fetch(rig.app, 0):
        assert update.update_id == update_id
        bot.take(rig.app, update, NOW, bot.CommandLimits())
    return servers.telegram.messages[before:]


def drain(rig: Rig, servers: Servers, now: int = NOW, limits: bot.CommandLimits | None = None) -> int:
    """Read and take every queued update, as the bot lane does; how many were answered."""
    servers.telegram.MAX_LONG_POLL = 0.0  # all is queued: the last, empty poll need not wait
    limits = limits or bot.CommandLimits()
    answered = 0
    while updates := bot.fetch(rig.app, 0):
        answered += sum(bot.take(rig.app, update, now, limits) for update in updates)
        limits.log_refused()
    return answered


def command_message_id(servers: Servers) -> int:
    return int(servers.telegram.updates[-1]["message"]["message_id"])


def answered_as_reply(servers: Servers, replies: list[dict[str, Any]]) -> str:
    assert replies, "the command was not answered"
    asked = command_message_id(servers)
    for reply in replies:
        assert reply["chat_id"] == CHAT_ID
        assert reply["reply_parameters"]["message_id"] == asked
        validate_telegram_html(reply["text"])
    return "\n".join(reply["visible_text"] for reply in replies)


def test_help_lists_the_commands(rig: Rig, servers: Servers) -> None:
    text = answered_as_reply(servers, ask(rig, servers, "/help"))
    for command in ("/stats", "/call", "/worst", "/missed", "/find"):
        assert command in text


def test_stats_gives_the_team_figures_and_one_managers(rig: Rig, servers: Servers) -> None:
    text = answered_as_reply(servers, ask(rig, servers, "/stats"))
    assert "Статистика за 7 дней" in text
    assert "Иван Петров\n📞 звонков 3 · 🕒 разговор 5:30 · ⭐ средняя 58" in text  # (67 + 50) / 2, rounded half to even
    assert "🔴 пропущено 1, перезвонили 1" in text and "Мария Сидорова" in text
    assert "пропускает 1 из 2 менеджеров: Работа с возражениями" in text
    one = answered_as_reply(servers, ask(rig, servers, "/stats мария 30d"))
    assert "Статистика за 30 дней" in one and "Мария Сидорова" in one and "Иван" not in one


def test_stats_addressed_to_this_bot_by_name_is_answered_and_to_another_bot_is_not(rig: Rig, servers: Servers) -> None:
    assert "Статистика" in answered_as_reply(servers, ask(rig, servers, "/stats@salesbot_test_bot 7d"))
    assert ask(rig, servers, "/stats@some_other_bot") == []


def test_call_sends_the_card_again_with_the_transcript(rig: Rig, servers: Servers) -> None:
    text = answered_as_reply(servers, ask(rig, servers, "/call 1"))
    assert "Менеджер: Иван Петров" in text and "Оценка: 67/100" in text
    (document,) = servers.telegram.documents
    assert document["filename"] == "call-1-transcript.txt"
    assert "доставка стеллажей в Казань" in document["bytes"].decode()
    assert document["reply_parameters"]["message_id"] == command_message_id(servers)


def test_worst_lists_the_lowest_scored_calls_with_links(rig: Rig, servers: Servers) -> None:
    replies = ask(rig, servers, "/worst 2")
    text = answered_as_reply(servers, replies)
    lines = [line for line in text.splitlines() if "/100" in line]
    assert [line.split(" · ")[0] for line in lines] == ["50/100", "67/100"]
    assert "ИП Сидоров" in lines[0] and lines[0].endswith("/call 2")
    assert '<a href="https://acme.amocrm.ru/leads/detail/7001">ИП Сидоров</a>' in replies[0]["text"]


def test_missed_lists_the_calls_not_returned_with_their_numbers(rig: Rig, servers: Servers) -> None:
    text = answered_as_reply(servers, ask(rig, servers, "/missed"))
    assert "Не перезвонили · 1 за 7 дней" in text
    assert "+7 916 123-45-67" in text and "Мария Сидорова" in text and "/call 4" in text
    assert "+7 916 000-00-01" not in text  # returned


def test_find_finds_a_word_in_a_stored_transcript_and_not_once_it_is_cleared(rig: Rig, servers: Servers) -> None:
    text = answered_as_reply(servers, ask(rig, servers, "/find Казань доставка"))
    assert "Найдено: 1" in text and "/call 1" in text and "доставка стеллажей в Казань" in text
    assert "Найдено: 1" in answered_as_reply(servers, ask(rig, servers, "/find дешевл"))  # a prefix: дешевле
    store = rig.app.store
    call = store.find_call(1)
    assert call is not None
    store.clear_personal([call], NOW, "forget")  # as `forget` and retention do
    assert "Ничего не нашлось." in answered_as_reply(servers, ask(rig, servers, "/find Казань"))


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("/call 999", "звонка #999 нет"),
        ("/call", "укажите номер звонка"),
        ("/worst 500", "N — число от 1 до 20"),
        ("/stats 14d", "период 14d: можно 7d или 30d"),
        ("/find", "напишите, что искать"),
        ("/dance", "не знаю команды /dance"),
    ],
)
def test_a_command_that_fails_answers_one_line_saying_why(rig: Rig, servers: Servers, command: str, why: str) -> None:
    (reply,) = ask(rig, servers, command)
    assert reply["visible_text"].startswith("⚠️ ") and why in reply["visible_text"]
    assert "\n" not in reply["visible_text"]


@pytest.mark.parametrize(("user", "chat"), [(STRANGER, CHAT_ID), (BOSS, OTHER_CHAT)])
def test_another_user_or_chat_gets_no_answer_and_one_log_line(
    rig: Rig, servers: Servers, caplog: pytest.LogCaptureFixture, user: int, chat: str
) -> None:
    servers.telegram.known_chats.add(OTHER_CHAT)
    with caplog.at_level(logging.INFO, logger="salesbot_poller.bot_lane"):
        assert ask(rig, servers, "/stats", user=user, chat=chat) == []
    (line,) = [r.getMessage() for r in caplog.records if r.name == "salesbot_poller.bot_lane"]
    assert "ignored" in line and f"user {user} in chat {chat}" in line
    sent = [r for r in servers.telegram.requests if not r.path.lower().endswith(("/getupdates", "/getme"))]
    assert sent == []  # nothing at all went to Telegram but reading


@pytest.mark.slow
def test_an_update_is_answered_once_across_a_restart(rig: Rig, servers: Servers) -> None:
    servers.telegram.push_message(CHAT_ID, BOSS, "/help")
    for update in bot.fetch(rig.app, 0):
        bot.take(rig.app, update, NOW, bot.CommandLimits())
    assert len(servers.telegram.messages) == 1
    # A restart: the same database, a new client; Telegram still holds the update (it was
    # never confirmed by a later getUpdates) and would hand it out again without the offset.
    assert len(servers.telegram.updates) == 1
    rig.app.store.close()
    rig.app.store = Store.open(rig.app.config.storage.database, NOW + 60)
    rig.app.updates = build_updates(rig.app.config)
    for update in bot.fetch(rig.app, 0):
        bot.take(rig.app, update, NOW + 60, bot.CommandLimits())
    assert len(servers.telegram.messages) == 1
    assert servers.telegram.update_offsets == [None, 2]  # the second process asked from past it


@pytest.mark.slow
def test_the_daemons_bot_lane_answers_while_the_other_lanes_are_left_alone(rig: Rig, servers: Servers) -> None:
    daemon = Daemon(rig.app, lambda: datetime.fromtimestamp(NOW, UTC))
    lane = threading.Thread(target=daemon.bot_job, name="bot")
    lane.start()
    try:
        servers.telegram.push_message(CHAT_ID, BOSS, "/missed")
        wait_for(lambda: len(servers.telegram.messages) == 1)
    finally:
        daemon.stop.set()
        lane.join(timeout=30)
    assert not lane.is_alive()
    assert "Не перезвонили" in servers.telegram.messages[0]["visible_text"]
    assert servers.amo.requests == [] and servers.openai.requests == []  # no cycle ran for it


@pytest.mark.slow
def test_the_daemons_bot_lane_goes_past_an_update_without_a_chat(rig: Rig, servers: Servers) -> None:
    daemon = Daemon(rig.app, lambda: datetime.fromtimestamp(NOW, UTC))
    forged = servers.telegram.push_update({"message": {"message_id": 90, "date": 0, "text": "/help"}})
    servers.telegram.push_message(CHAT_ID, BOSS, "/missed")
    lane = threading.Thread(target=daemon.bot_job, name="bot")
    lane.start()
    try:
        wait_for(lambda: len(servers.telegram.messages) == 1, timeout=10)  # not after a 30 s retry, not never
        wait_for(lambda: forged + 2 in servers.telegram.update_offsets, timeout=10)
    finally:
        daemon.stop.set()
        lane.join(timeout=30)
    assert "Не перезвонили" in servers.telegram.messages[0]["visible_text"]


def bot_config(servers: Servers) -> Path:
    path = servers.write_config(interval_seconds=3600)
    text = path.read_text().replace(
        f'chat_id = "{CHAT_ID}"\n', f'chat_id = "{CHAT_ID}"\ncommand_chats = ["{CHAT_ID}"]\nadmins = [{BOSS}]\n', 1
    )
    path.write_text(text)
    return path


def run_daemon(config: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESBOT_")}
    return subprocess.Popen(
        [sys.executable, "-m", "salesbot_poller", "--config", str(config), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_the_service_answers_a_command_once_across_a_restart(servers: Servers) -> None:
    config = bot_config(servers)
    first = run_daemon(config)
    try:
        servers.telegram.push_message(CHAT_ID, BOSS, "/help")
        wait_for(lambda: len(servers.telegram.messages) == 1)
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=20)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert "bot: /help from user 4242" in err
    second = run_daemon(config)
    try:
        offsets = len(servers.telegram.update_offsets)
        wait_for(lambda: len(servers.telegram.update_offsets) >= offsets + 2)  # it has polled since
        servers.telegram.push_message(CHAT_ID, STRANGER, "/help")
        wait_for(lambda: 3 in servers.telegram.update_offsets)  # the stranger's update was read and passed
        second.send_signal(signal.SIGTERM)
        out2, err2 = second.communicate(timeout=20)
    finally:
        second.kill()
    assert second.returncode == 0, err2
    assert len(servers.telegram.messages) == 1  # neither the old update again, nor the stranger
    assert "bot: /help from user 777" in err2 and "not in telegram.admins" in err2
    assert_no_secret(out, err, out2, err2)


SENDER = {"id": BOSS, "is_bot": False, "first_name": "Boss"}
FORGED = {
    "a message without a chat": {"message": {"message_id": 90, "date": 0, "from": SENDER, "text": "/help"}},
    "a chat that is not an object": {"message": {"message_id": 91, "date": 0, "chat": "nope", "text": "/help"}},
    "an edited message, half there": {"edited_message": {"message_id": 92}},
    "a callback query without a sender": {"callback_query": {"id": "1"}},
    "a sender without a name": {"message": {"message_id": 93, "date": 0, "chat": {"id": -1, "type": "group"},
                                            "from": {"id": BOSS}, "text": "/help"}},
    "a text that is a number": {"message": {"message_id": 94, "date": 0, "chat": {"id": int(CHAT_ID), "type": "group"},
                                            "from": SENDER, "text": 5}},
}  # fmt: skip


@pytest.mark.parametrize("forged", FORGED.values(), ids=FORGED.keys())
def test_an_update_the_client_cannot_read_is_logged_once_and_the_next_command_is_answered(
    rig: Rig, servers: Servers, caplog: pytest.LogCaptureFixture, forged: dict[str, Any]
) -> None:
    bad = servers.telegram.push_update(forged)
    servers.telegram.push_message(CHAT_ID, BOSS, "/help")
    with caplog.at_level(logging.INFO):
        assert drain(rig, servers) == 1
    (reply,) = servers.telegram.messages
    assert "Команды" in reply["visible_text"]
    assert rig.app.store.get_state(bot.BOT_OFFSET_KEY) == str(bad + 2)  # past both
    (line,) = [r.getMessage() for r in caplog.records if f"update {bad}" in r.getMessage()]
    assert "skipped" in line
    assert servers.telegram.updates == []  # confirmed: Telegram sends neither again


def test_an_unreadable_update_in_a_batch_of_three_leaves_the_other_two_answered(rig: Rig, servers: Servers) -> None:
    servers.telegram.push_message(CHAT_ID, BOSS, "/help")
    servers.telegram.push_update(FORGED["a chat that is not an object"])
    last = servers.telegram.push_message(CHAT_ID, BOSS, "/missed")
    servers.telegram.MAX_LONG_POLL = 0.0
    batch = bot.fetch(rig.app, 0)
    assert [update.update_id for update in batch] == [last - 2, last - 1, last]  # one getUpdates, all three
    assert [bot.take(rig.app, update, NOW, bot.CommandLimits()) for update in batch] == [True, False, True]
    assert ["Команды" in m["visible_text"] for m in servers.telegram.messages] == [True, False]
    assert "Не перезвонили" in servers.telegram.messages[1]["visible_text"]
    assert bot.fetch(rig.app, 0) == []
    assert servers.telegram.update_offsets[-1] == last + 1


ADMIN2, LEGIT = 4243, 4244


def test_a_flood_of_commands_is_answered_up_to_the_limit_and_refused_once_per_burst(
    servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    admins = [BOSS, ADMIN2, LEGIT]
    rig = loopback_rig(servers, paced=False, telegram={"command_chats": [CHAT_ID], "admins": admins})
    rig.app.updates = build_updates(rig.app.config)
    clock = [0.0]  # Telegram's real pacing per chat (20 a minute to a group), on a clock that sleeping moves
    rig.app.pacer = ChatPacer(clock=lambda: clock[0], sleep=lambda seconds: clock.__setitem__(0, clock[0] + seconds))
    sent: dict[int, set[int]] = {user: set() for user in admins}

    def push(user: int, text: str) -> None:
        servers.telegram.push_message(CHAT_ID, user, text)
        sent[user].add(command_message_id(servers))

    for n in range(998):  # two admins flood, the third asks twice in the middle of it
        push((BOSS, ADMIN2)[n % 2], "/help")
        if n in (300, 700):
            push(LEGIT, "/help")
    assert sum(map(len, sent.values())) == 1000
    limits = bot.CommandLimits()
    with caplog.at_level(logging.INFO, logger="salesbot_poller.bot_lane"):
        drain(rig, servers, NOW, limits)
    replies: dict[int, list[str]] = {user: [] for user in admins}
    for message in servers.telegram.messages:
        asked = message["reply_parameters"]["message_id"]
        (user,) = [user for user in admins if asked in sent[user]]
        replies[user].append(message["visible_text"])
    too_many = bot.TOO_MANY
    assert replies[LEGIT] == [replies[BOSS][0]] * 2  # every command of the one below the limit answered
    for user in (BOSS, ADMIN2):
        assert replies[user].count(too_many) == 1  # told once for the whole burst, not per command
        assert len(replies[user]) == bot.COMMANDS_PER_MINUTE + 1
    refused = {user: 0 for user in admins}  # from the log: every refused command, the told one included
    for record in caplog.records:
        if line := re.fullmatch(
            r"bot: (\d+) command\(s\) from user (\d+) refused: over 5 a minute", record.getMessage()
        ):
            refused[int(line[2])] += int(line[1])
    for user in admins:  # every command taken was answered or refused: none is lost
        assert len(replies[user]) - replies[user].count(too_many) + refused[user] == len(sent[user])
    # Two minutes later the bucket is full again: a second burst is answered up to the limit, told once more.
    before = len(servers.telegram.messages)
    for _ in range(20):
        push(BOSS, "/help")
    drain(rig, servers, NOW + 120, limits)
    again = [m["visible_text"] for m in servers.telegram.messages[before:]]
    assert again.count(too_many) == 1 and len(again) == bot.COMMANDS_PER_MINUTE + 1


def test_an_admin_under_the_limit_is_answered_every_time_as_the_bucket_refills() -> None:
    limits = bot.CommandLimits(per_minute=5)
    verdicts = [limits.admit(BOSS, NOW + 12 * n) for n in range(30)]  # one every 12 s: exactly the rate
    assert set(verdicts) == {"answer"}
    burst = [limits.admit(ADMIN2, NOW) for _ in range(8)]
    assert burst == ["answer"] * 5 + ["tell", "refuse", "refuse"]
    assert limits.refused() == {ADMIN2: 3}
    assert limits.admit(ADMIN2, NOW + 12) == "answer"  # a token back after 12 s
    assert limits.admit(ADMIN2, NOW + 13) == "refuse"  # the same burst: not told again
    assert limits.admit(ADMIN2, NOW + 13 + 60 + 12 * 5) == "answer"
    limits.log_refused()
    assert limits.refused() == {}
