"""Commands sent on behalf of a chat: an admin posting anonymously (as the group itself) is
answered only with `telegram.anonymous_admins = true`, and limited per chat, not per
Telegram's placeholder user; a linked channel's post or a member posting as a channel is
never answered. The real telebot client long-polls the fake Bot API.

The updates follow real ones. Bot API, Message.sender_chat: "Sender of the message, sent on
behalf of a chat. For example, the channel itself for channel posts, the supergroup itself
for messages from anonymous group administrators, the linked channel for messages
automatically forwarded to the discussion group. For backward compatibility, the field from
contains a fake sender user in non-channel chats" (https://core.telegram.org/bots/api#message).
An anonymous admin's message as Telegram sent it, recorded in teloxide's tests
(teloxide/teloxide, crates/teloxide-core/src/types/message.rs, `issue_475`):
`"from":{"id":1087968824,"is_bot":true,"first_name":"Group","username":"GroupAnonymousBot"},
"sender_chat":{"id":-1001331354980,...,"type":"supergroup"},"chat":{"id":-1001331354980,...}`.
A linked channel's automatic forward comes `"from":{"id":777000,"is_bot":false,"first_name":
"Telegram"}` with `"sender_chat"` the channel and `"is_automatic_forward":true`; a member
posting as their channel comes `"from":{"id":136817688,"is_bot":true,"username":
"Channel_Bot"}` with `"sender_chat"` that channel.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import pytest

from salesbot_poller import bot_lane as bot
from salesbot_poller.app import build_updates
from tests.builder import Rig
from tests.conftest import CHAT_ID, Servers
from tests.loopback_app import loopback_rig
from tests.test_bot import BOSS, NOW, drain

GROUP_ANONYMOUS_BOT = {"id": 1087968824, "is_bot": True, "first_name": "Group", "username": "GroupAnonymousBot"}
TELEGRAM_SERVICE = {"id": 777000, "is_bot": False, "first_name": "Telegram"}
CHANNEL_BOT = {"id": 136817688, "is_bot": True, "first_name": "Channel", "username": "Channel_Bot"}
SECOND_CHAT = "-1005555555555"
CHANNEL = {"id": -1007777777777, "title": "Новости компании", "type": "channel"}
MESSAGE_IDS = itertools.count(5000)  # apart from the fake's own message ids


def group(chat_id: str) -> dict[str, Any]:
    return {"id": int(chat_id), "title": "Отдел продаж", "type": "supergroup"}


def on_behalf(
    servers: Servers, text: str, sender: dict[str, Any], sender_chat: dict[str, Any], chat: str = CHAT_ID, **extra: Any
) -> int:
    """Queue a message sent on behalf of `sender_chat` in `chat`, shaped like Telegram's; its id."""
    message_id = next(MESSAGE_IDS)
    message = {
        "message_id": message_id,
        "from": sender,
        "sender_chat": sender_chat,
        "chat": group(chat),
        "date": int(time.time()),
        "text": text,
        "entities": [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}],
        **extra,
    }
    servers.telegram.push_update({"message": message})
    return message_id


def anonymous(servers: Servers, text: str, chat: str = CHAT_ID) -> int:
    return on_behalf(servers, text, GROUP_ANONYMOUS_BOT, group(chat), chat)


def bot_rig(servers: Servers, **telegram: Any) -> Rig:
    servers.telegram.known_chats.add(SECOND_CHAT)
    settings = {"command_chats": [CHAT_ID, SECOND_CHAT], "admins": [BOSS]} | telegram
    rig = loopback_rig(servers, paced=False, telegram=settings)
    rig.app.updates = build_updates(rig.app.config)
    return rig


def test_an_anonymous_admin_of_the_command_chat_is_answered_when_allowed(servers: Servers) -> None:
    rig = bot_rig(servers, anonymous_admins=True)
    asked = anonymous(servers, "/help")
    assert drain(rig, servers) == 1
    (reply,) = servers.telegram.messages
    assert reply["chat_id"] == CHAT_ID and reply["reply_parameters"]["message_id"] == asked
    assert "Команды" in reply["visible_text"]


def test_an_anonymous_admin_is_not_answered_by_default_and_the_log_says_how(
    servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    rig = bot_rig(servers, admins=[BOSS, GROUP_ANONYMOUS_BOT["id"]])  # the placeholder's id admits no one
    anonymous(servers, "/help")
    with caplog.at_level(logging.INFO, logger="salesbot_poller.bot_lane"):
        assert drain(rig, servers) == 0
    assert servers.telegram.messages == []
    (line,) = [r.getMessage() for r in caplog.records if r.name == "salesbot_poller.bot_lane"]
    assert f"an anonymous admin in chat {CHAT_ID}" in line and "telegram.anonymous_admins = true" in line


@pytest.mark.parametrize(
    ("sender", "extra"),
    [(TELEGRAM_SERVICE, {"is_automatic_forward": True}), (CHANNEL_BOT, {})],
    ids=["a linked channel's automatic forward", "a member posting as their channel"],
)
def test_a_command_sent_on_behalf_of_another_chat_is_never_answered(
    servers: Servers, caplog: pytest.LogCaptureFixture, sender: dict[str, Any], extra: dict[str, Any]
) -> None:
    rig = bot_rig(servers, anonymous_admins=True, admins=[BOSS, sender["id"]])
    on_behalf(servers, "/missed", sender, CHANNEL, **extra)
    with caplog.at_level(logging.INFO, logger="salesbot_poller.bot_lane"):
        assert drain(rig, servers) == 0
    assert servers.telegram.messages == []
    (line,) = [r.getMessage() for r in caplog.records if r.name == "salesbot_poller.bot_lane"]
    assert f"sent on behalf of chat {CHANNEL['id']}" in line and "never answered" in line


def test_anonymous_commands_are_limited_per_chat_not_per_placeholder_user(
    servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    rig = bot_rig(servers, anonymous_admins=True)
    for _ in range(bot.COMMANDS_PER_MINUTE + 3):
        anonymous(servers, "/help")
    anonymous(servers, "/help", SECOND_CHAT)  # another group's anonymous admin
    servers.telegram.push_message(CHAT_ID, BOSS, "/help")  # an admin under their own name
    limits = bot.CommandLimits()
    with caplog.at_level(logging.INFO, logger="salesbot_poller.bot_lane"):
        drain(rig, servers, NOW, limits)
    by_chat = {chat: [m["visible_text"] for m in servers.telegram.messages if m["chat_id"] == chat]
               for chat in (CHAT_ID, SECOND_CHAT)}  # fmt: skip
    assert by_chat[SECOND_CHAT] == [by_chat[CHAT_ID][0]], "another group's anonymous admin is answered"
    assert by_chat[CHAT_ID].count(bot.TOO_MANY) == 1
    assert len(by_chat[CHAT_ID]) == bot.COMMANDS_PER_MINUTE + 1 + 1  # the limit, told once, and the named admin
    refused = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert refused == [f"bot: 3 command(s) from the anonymous admins of chat {CHAT_ID} refused: over 5 a minute"]
