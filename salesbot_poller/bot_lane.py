"""The bot's commands lane: read the bot's updates, answer the head of sales.

Contract:
- `fetch(app, wait)`: the updates after the stored offset (state `BOT_OFFSET_KEY`), waiting
  up to `wait` seconds for one (long polling; `App.updates`).
- `take(app, update, now, limits)`: first commits the offset past `update` (so a restart never
  answers it again: an answer cut short by a crash is lost, never doubled), then answers it
  when it is a command (`/name args`, or `/name@ThisBot args` as groups send them) in one of
  `telegram.command_chats` from one of `telegram.admins`. Anything else (another chat,
  another user, plain text, a command for another bot) gets one log line and no answer: the
  bot never tells a stranger it exists.
- A message sent on behalf of a chat (`Incoming.sender_chat_id`) is judged by that chat, never
  by its `from` (Telegram's placeholder user, the same for every group): sent as the command
  chat itself, it is an admin posting anonymously (only admins can), answered when
  `telegram.anonymous_admins` is true; sent as any other chat (a linked channel's post, a
  member posting as their channel), it is never answered.
- An answer is a reply to the command's message (`bot_answers`), part by part, in the
  chat's turn (`App.pacer`); a command that cannot be answered gets one line saying why. A
  send that fails is logged and the rest of that answer dropped; a fatal error (the chat is
  gone, the token revoked) propagates.
- Each admin may ask `COMMANDS_PER_MINUTE` commands a minute (`CommandLimits`, a token
  bucket per user id, and one per chat for its anonymous admins, who all look alike; passed
  in by the lane that owns it): a command over the limit is refused, never dropped in silence.
  The first refused command of a burst (refusals less than `BURST_QUIET_SECONDS` apart) gets
  the one answer `TOO_MANY`; the others of that burst get none, and
  `CommandLimits.log_refused()` (after each batch) logs how many were refused. So every
  command taken is answered or refused, and a flood costs its chat at most
  `COMMANDS_PER_MINUTE` answers and one refusal a minute per admin.
- A button pressed (`Incoming.press`) is handed to `bot_callbacks.handle` once the offset is
  stored: it stores the press, checks it and answers it (see there); any chat, since cards go
  to chats that are not command chats.
- Nothing here touches the intake or work lanes: commands only read the store (and write
  the offset); presses write their corrections.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from salesbot_poller import bot_callbacks
from salesbot_poller.domain import Destination, Incoming
from salesbot_poller.errors import FatalError, PermanentError, TransientError
from salesbot_poller.logs import excerpt
from salesbot_poller.pipeline.context import App
from salesbot_poller.pipeline.messages import esc
from salesbot_poller.reports.bot_answers import Answer, CommandFailed, answer

log = logging.getLogger(__name__)

BOT_OFFSET_KEY = "bot_updates_offset"
ANSWER_PATIENCE = 30.0  # seconds an answer's part waits for its chat's slot
# A person types a command a few times a minute at most; a few admins at this rate stay under
# Telegram's 20 messages a minute to a group, so the answers taken are the answers sent.
COMMANDS_PER_MINUTE = 5
BURST_QUIET_SECONDS = 60  # a minute without a refused command ends a burst: the next one is told again
TOO_MANY = (
    f"⚠️ слишком много запросов: не больше {COMMANDS_PER_MINUTE} команд в минуту; "
    "лишние команды не выполнены, повторите через минуту"
)


@dataclass
class _Bucket:
    tokens: float
    at: int  # when `tokens` was counted
    last_refused: int | None = None  # the current burst's last refusal
    refused: int = 0  # since the last `log_refused`


Asker = int | str  # a user id, or a command chat's id (str) for its anonymous admins


def _whose(asker: Asker) -> str:
    return f"user {asker}" if isinstance(asker, int) else f"the anonymous admins of chat {asker}"


class CommandLimits:
    """A token bucket per asker (`Asker`): `per_minute` commands at once, one more every
    60/`per_minute` s.

    `admit(asker, now)` is "answer" (a token taken), "tell" (refused, the first of its burst:
    answer `TOO_MANY`) or "refuse" (refused, counted). One per lane; not thread-safe (one
    lane thread asks it)."""

    def __init__(self, per_minute: int = COMMANDS_PER_MINUTE) -> None:
        self.per_minute = per_minute
        self._buckets: dict[Asker, _Bucket] = {}  # only admins get here: a handful of entries

    def admit(self, user: Asker, now: int) -> str:
        bucket = self._buckets.setdefault(user, _Bucket(float(self.per_minute), now))
        refill = max(0, now - bucket.at) * self.per_minute / 60
        bucket.tokens, bucket.at = min(float(self.per_minute), bucket.tokens + refill), now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return "answer"
        new_burst = bucket.last_refused is None or now - bucket.last_refused >= BURST_QUIET_SECONDS
        bucket.last_refused = now
        bucket.refused += 1
        return "tell" if new_burst else "refuse"

    def refused(self) -> dict[Asker, int]:
        """Commands refused per asker since the last `log_refused`."""
        return {user: bucket.refused for user, bucket in self._buckets.items() if bucket.refused}

    def log_refused(self) -> None:
        """One line per asker with commands refused since the last call; the counts restart."""
        for user, count in self.refused().items():
            log.warning("bot: %d command(s) from %s refused: over %d a minute", count, _whose(user), self.per_minute)
            self._buckets[user].refused = 0


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


def _asker(update: Incoming, admins: list[int], anonymous_admins: bool) -> tuple[Asker | None, str]:
    """Whom a command in a command chat counts as (its rate limit's key), or None and why it is
    not answered (see the module contract)."""
    if update.sender_chat_id is None:
        if update.user_id is None or update.user_id not in admins:
            return None, "the user is not in telegram.admins"
        return update.user_id, ""
    if update.sender_chat_id != update.chat_id:
        return None, f"sent on behalf of chat {update.sender_chat_id} (a channel or another chat), never answered"
    if not anonymous_admins:
        return None, "an anonymous admin: answered only with telegram.anonymous_admins = true"
    return update.chat_id, ""


def fetch(app: App, wait: int) -> list[Incoming]:
    """See the module contract."""
    if app.updates is None:
        return []
    stored = app.store.get_state(BOT_OFFSET_KEY)
    return app.updates.fetch(int(stored) if stored else None, wait)


def take(app: App, update: Incoming, now: int, limits: CommandLimits) -> bool:
    """See the module contract; True when the update was answered (a refusal included)."""
    app.store.committed(lambda: app.store.set_state(BOT_OFFSET_KEY, str(update.update_id + 1)))
    if update.press is not None:
        return bot_callbacks.handle(app, update.press, now)
    if app.updates is None or not update.text:
        return False
    command = parse_command(update.text, app.updates.username())
    telegram = app.config.telegram
    who = f"user {update.user_id} in chat {update.chat_id}"
    if update.sender_chat_id == update.chat_id:
        who = f"an anonymous admin in chat {update.chat_id}"  # `user_id` is Telegram's placeholder
    if command is None:
        log.info("bot: update %d from %s ignored: not a command for this bot", update.update_id, who)
        return False
    name, args = command
    if update.chat_id not in telegram.command_chats:
        log.info("bot: /%s from %s ignored: the chat is not in telegram.command_chats", excerpt(name, 40), who)
        return False
    asker, why = _asker(update, telegram.admins, telegram.anonymous_admins)
    if asker is None:
        log.info("bot: /%s from %s ignored: %s", excerpt(name, 40), who, why)
        return False
    verdict = limits.admit(asker, now)
    if verdict == "refuse":
        log.debug("bot: /%s from %s refused: over the limit", excerpt(name, 40), who)
        return False
    if verdict == "tell":
        over = f"over {limits.per_minute} commands a minute"
        log.info("bot: /%s from %s refused: %s (told once)", excerpt(name, 40), who, over)
        _send(app, update, Answer([esc(TOO_MANY)]), now)
        return True
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
        for index, part in enumerate(reply.parts):
            app.pacer.turn(update.chat_id, now, patience=ANSWER_PATIENCE)
            keyboard = reply.keyboard if index == reply.keyboard_part else None
            app.notifier.send(part, to, update.message_id, keyboard)
        if reply.document is not None:
            doc = reply.document
            app.pacer.turn(update.chat_id, now, patience=ANSWER_PATIENCE)
            app.notifier.send_document(doc.filename, doc.text.encode("utf-8"), doc.caption, to, update.message_id)
    except FatalError:
        raise
    except (TransientError, PermanentError) as exc:  # Busy is a TransientError
        log.warning("bot: the answer to update %d was not sent in full: %s", update.update_id, exc)
