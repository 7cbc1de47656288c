"""The bot's commands lane: read the bot's updates, answer the head of sales.

Contract:
- `fetch(app, wait)`: the updates after the stored offset (state `BOT_OFFSET_KEY`), waiting
  up to `wait` seconds for one (long polling; `App.updates`).
- `take(app, update, now)`: first commits the offset past `update` (so a restart never
  answers it again: an answer cut short by a crash is lost, never doubled), then answers it
  when it is a command (`/name args`, or `/name@ThisBot args` as groups send them) in one of
  `telegram.command_chats` from one of `telegram.admins`. Anything else (another chat,
  another user, plain text, a command for another bot) gets one log line and no answer: the
  bot never tells a stranger it exists.
- An answer is a reply to the command's message (`bot_answers`), part by part, in the
  chat's turn (`App.pacer`); a command that cannot be answered gets one line saying why. A
  send that fails is logged and the rest of that answer dropped; a fatal error (the chat is
  gone, the token revoked) propagates.
- Nothing here touches the intake or work lanes: commands only read the store (and write
  the offset).
"""

from __future__ import annotations

import logging

from salesbot_poller.domain import Destination, Incoming
from salesbot_poller.errors import FatalError, PermanentError, TransientError
from salesbot_poller.logs import excerpt
from salesbot_poller.pipeline.context import App
from salesbot_poller.pipeline.messages import esc
from salesbot_poller.reports.bot_answers import Answer, CommandFailed, answer

log = logging.getLogger(__name__)

BOT_OFFSET_KEY = "bot_updates_offset"
ANSWER_PATIENCE = 30.0  # seconds an answer's part waits for its chat's slot


def parse_command(text: str, username: str) -> tuple[str, list[str]] | None:
    """("stats", ["Иван", "30d"]) for "/stats@ThisBot Иван 30d"; None when `text` is not a
    command, or is one for another bot."""
    words = text.split()
    if not words or not words[0].startswith("/") or len(words[0]) < 2:
        return None
    name, _, addressed = words[0][1:].partition("@")
    if addressed and addressed.lower() != username.lower():
        return None
    return name.lower(), words[1:]


def fetch(app: App, wait: int) -> list[Incoming]:
    """See the module contract."""
    if app.updates is None:
        return []
    stored = app.store.get_state(BOT_OFFSET_KEY)
    return app.updates.fetch(int(stored) if stored else None, wait)


def take(app: App, update: Incoming, now: int) -> bool:
    """See the module contract; True when the update was answered."""
    app.store.committed(lambda: app.store.set_state(BOT_OFFSET_KEY, str(update.update_id + 1)))
    if app.updates is None or not update.text:
        return False
    command = parse_command(update.text, app.updates.username())
    telegram = app.config.telegram
    who = f"user {update.user_id} in chat {update.chat_id}"
    if command is None:
        log.info("bot: update %d from %s ignored: not a command for this bot", update.update_id, who)
        return False
    name, args = command
    if update.chat_id not in telegram.command_chats:
        log.info("bot: /%s from %s ignored: the chat is not in telegram.command_chats", excerpt(name, 40), who)
        return False
    if update.user_id not in telegram.admins:
        log.info("bot: /%s from %s ignored: the user is not in telegram.admins", excerpt(name, 40), who)
        return False
    try:
        reply = answer(app, name, args, now)
    except CommandFailed as exc:
        reply = Answer([f"⚠️ {esc(str(exc))}"])
    except Exception as exc:  # a bug or data we cannot read: the asker hears of it in one line
        log.error("bot: /%s failed: %s: %s", name, type(exc).__name__, excerpt(str(exc)), exc_info=True)
        reply = Answer(["⚠️ не получилось ответить: внутренняя ошибка (подробности в журнале сервиса)"])
    log.info("bot: /%s from %s answered (%d part(s))", name, who, len(reply.parts))
    _send(app, update, reply, now)
    return True


def _send(app: App, update: Incoming, reply: Answer, now: int) -> None:
    to = Destination(update.chat_id)
    try:
        for part in reply.parts:
            app.pacer.turn(update.chat_id, now, patience=ANSWER_PATIENCE)
            app.notifier.send(part, to, update.message_id)
        if reply.document is not None:
            doc = reply.document
            app.pacer.turn(update.chat_id, now, patience=ANSWER_PATIENCE)
            app.notifier.send_document(doc.filename, doc.text.encode("utf-8"), doc.caption, to, update.message_id)
    except FatalError:
        raise
    except (TransientError, PermanentError) as exc:  # Busy is a TransientError
        log.warning("bot: the answer to update %d was not sent in full: %s", update.update_id, exc)
