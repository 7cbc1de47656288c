"""The bot's buttons: a press on a card (`domain.Press`), answered once.

Contract of `handle(app, press, now)` (called by `bot_lane.take` after it stored the offset):
- The press's id is stored first (`Store.take_callback`): a press stored already (sent again
  by Telegram, or met again after a restart) is not acted on again, nor answered.
- Then it is verified: the button's data must be ours (`buttons.read`: the MAC of this
  install's key), else "Кнопка недействительна"; the call must exist and be analysed, else
  "Звонок не найден"; the presser must be one of `telegram.admins`, or, with
  `telegram.managers_may_correct`, the Telegram user `telegram.user_ids` maps the call's
  amoCRM user to (for every button, the quotes included), else "Только для руководителей".
  Nothing changes for a refused press; each refusal is one log line.
- Then it is acted on:
  - ▶️ a quote: `clips.send_clip` sends its moment as a reply to the card;
  - ✏️ "Исправить": the card's buttons become the correction keyboard
    (`buttons.correction_keyboard`, editMessageReplyMarkup: no new message); "Готово" puts
    the card's buttons back;
  - a verdict: stored (`Store.correct_verdict`, with the amoCRM score write when the score
    changed: `corrections.write_score`, in one transaction), then the card is edited in
    place (editMessageText, every part of it the bot knows) with the human verdict
    "(исправлено: Имя)" and the score recomputed. The same verdict again (a double tap)
    changes nothing and answers "Уже исправлено".
  A call whose personal data was removed cannot be corrected (its card would lose its text).
- A card Telegram no longer lets the bot edit (older than `EDIT_WINDOW`, or an edit refused)
  gets the card as it is now as a fresh reply instead, with the buttons the press asked for.
- Last, the press is answered (answerCallbackQuery: a short text only the presser sees, or
  nothing). A Telegram error on the way is one log line and an answer saying it did not
  work; a bug is logged with its traceback and answered as an internal error; a fatal error
  (the token revoked) propagates to the lane. Never a crashed lane. A correction stored
  whose card could not be updated says so ("сохранено; карточку обновить не удалось").
"""

from __future__ import annotations

import logging

from salesbot_poller.domain import Destination, Keyboard, Press
from salesbot_poller.errors import FatalError, PermanentError, TransientError
from salesbot_poller.logs import excerpt
from salesbot_poller.pipeline import buttons, clips, corrections
from salesbot_poller.pipeline.context import App
from salesbot_poller.pipeline.corrections import Card
from salesbot_poller.store import Call

log = logging.getLogger(__name__)

EDIT_WINDOW = 48 * 3600  # Telegram refuses to edit (and delete) older messages
PATIENCE = 30.0  # seconds an edit waits for its chat's slot (`App.pacer`)
INVALID = "Кнопка недействительна"
ONLY_HEADS = "Только для руководителей"
NOT_FOUND = "Звонок не найден: он удалён или ещё не разобран"
REMOVED = "Данные звонка удалены: исправить его уже нельзя"
STALE = "Кнопка устарела: откройте карточку заново (/call номер)"
ALREADY = "Уже исправлено"
FAILED = "Не получилось: Telegram не ответил, попробуйте ещё раз"
INTERNAL = "Не получилось: внутренняя ошибка (подробности в журнале сервиса)"
VERDICT_RU = {"done": "✅ выполнено", "partly": "◐ частично", "missed": "❌ не выполнено"}


def handle(app: App, press: Press, now: int) -> bool:
    """See the module contract; True when the press was acted on (a refusal included)."""
    who = f"user {press.user_id} in chat {press.chat_id}"
    if not app.store.committed(lambda: app.store.take_callback(press.callback_id, now)):
        log.info("bot: button press %s from %s handled before: not again", excerpt(press.callback_id, 40), who)
        return False
    try:
        reply = _act(app, press, now, who)
    except FatalError:
        raise
    except (TransientError, PermanentError) as exc:  # Busy is a TransientError
        log.warning("bot: button press from %s not done: %s", who, exc)
        reply = FAILED
    except Exception as exc:  # a bug or data we cannot read: the presser hears of it in one line
        log.error("bot: button press from %s failed: %s: %s", who, type(exc).__name__, excerpt(str(exc)), exc_info=True)
        reply = INTERNAL
    try:
        app.notifier.answer_callback(press.callback_id, reply)
    except (TransientError, PermanentError) as exc:  # Telegram gave up on it (too old): nothing to undo
        log.warning("bot: the answer to a button press from %s was not sent: %s", who, exc)
    return True


def may_press(app: App, call: Call, user_id: int) -> bool:
    """Whether `user_id` may press the buttons of `call`'s card (see the module contract)."""
    telegram = app.config.telegram
    if user_id in telegram.admins:
        return True
    manager = call.responsible_user_id
    return telegram.managers_may_correct and manager is not None and telegram.user_ids.get(manager) == user_id


def _act(app: App, press: Press, now: int, who: str) -> str:
    tap = buttons.read(press.data, app.store.callback_secret())
    if tap is None:
        log.warning("bot: button press from %s refused: callback data %r is not ours", who, excerpt(press.data, 64))
        return INVALID
    call = app.store.find_call(tap.call_id)
    if call is None:
        log.info("bot: button press from %s: call %d is not in the database", who, tap.call_id)
        return NOT_FOUND
    if not may_press(app, call, press.user_id):
        log.info("bot: button press from %s on call %d refused: not an admin nor its manager", who, call.id)
        return ONLY_HEADS
    if tap.action == "clip":
        return _clip(app, press, call, tap.position or 0, now)
    if call.personal_removed_at is not None:
        log.info("bot: button press from %s on call %d: its personal data was removed", who, call.id)
        return REMOVED
    card = corrections.card(app, call)
    if card is None:
        log.info("bot: button press from %s: call %d has no analysis", who, call.id)
        return NOT_FOUND
    secret = app.store.callback_secret()
    if tap.action == "edit":
        _keyboard(app, press, card, buttons.correction_keyboard(card.analysis, call.id, secret), now)
        return ""
    if tap.action == "back":
        _keyboard(app, press, card, card.keyboard, now)
        return ""
    return _set(app, press, call, card, tap.position or 0, tap.verdict or "", now, who)


def _clip(app: App, press: Press, call: Call, position: int, now: int) -> str:
    analysis = corrections.read_analysis(call)
    if analysis is None or position >= len(analysis.rubric) or analysis.rubric[position].at is None:
        log.info("bot: quote %d of call %d: not in its analysis (the button is stale)", position, call.id)
        return STALE
    item = analysis.rubric[position]
    failed = clips.send_clip(app, call.id, float(item.at or 0), item.evidence, press.chat_id, press.message_id, now)
    return failed or ""


def _set(app: App, press: Press, call: Call, card: Card, position: int, verdict: str, now: int, who: str) -> str:
    if position >= len(card.analysis.rubric):
        log.info("bot: verdict %d of call %d: not in its analysis (the button is stale)", position, call.id)
        return STALE
    item = card.analysis.rubric[position]
    store = app.store

    def write() -> tuple[bool, bool]:
        with store.db.atomic():  # the correction and its amoCRM write stand or fall together
            changed = store.correct_verdict(call, item.item_id, position, verdict, press.user_name, press.user_id, now)
            return changed, changed and corrections.write_score(app, call, now)

    changed, rewrite = store.committed(write)
    if not changed:
        return ALREADY
    log.info(
        "bot: call %d item %s corrected to %s by %s (%s)%s",
        call.id,
        item.item_id,
        verdict,
        who,
        excerpt(press.user_name, 40),
        "; the amoCRM score is written again" if rewrite else "",
    )
    done = f"{item.title[:60]}: {VERDICT_RU.get(verdict, verdict)}"
    fresh = corrections.card(app, call)
    if fresh is not None:
        keyboard = buttons.correction_keyboard(fresh.analysis, call.id, store.callback_secret())
        try:
            _card(app, press, call, fresh, keyboard, now)
        except (TransientError, PermanentError) as exc:  # Busy is a TransientError; the correction stays
            log.warning("bot: call %d corrected, its card in chat %s not updated: %s", call.id, press.chat_id, exc)
            return f"{done} (сохранено; карточку обновить не удалось — /call {call.id})"
    return done


def _editable(press: Press, now: int) -> bool:
    return press.message_date > 0 and now - press.message_date < EDIT_WINDOW


def _keyboard(app: App, press: Press, card: Card, keyboard: Keyboard, now: int) -> None:
    """The pressed card's buttons become `keyboard`; an old card gets a fresh copy instead."""
    if _editable(press, now):
        try:
            app.pacer.turn(press.chat_id, now, patience=PATIENCE)
            app.notifier.edit_reply_markup(press.chat_id, press.message_id, keyboard)
            return
        except PermanentError as exc:
            log.info(
                "bot: the card %d in chat %s cannot be edited (%s): sent again", press.message_id, press.chat_id, exc
            )
    _fresh(app, press, card, keyboard, now)


def _card(app: App, press: Press, call: Call, card: Card, keyboard: Keyboard, now: int) -> None:
    """The pressed card shows `card` with `keyboard`: every part the bot knows is edited."""
    if _editable(press, now):
        try:
            for message_id, text, buttons_here in _targets(app, press, call, card, keyboard):
                app.pacer.turn(press.chat_id, now, patience=PATIENCE)
                app.notifier.edit_message_text(press.chat_id, message_id, text, buttons_here)
            return
        except PermanentError as exc:
            log.info(
                "bot: the card %d in chat %s cannot be edited (%s): sent again", press.message_id, press.chat_id, exc
            )
    _fresh(app, press, card, keyboard, now)


def _targets(
    app: App, press: Press, call: Call, card: Card, keyboard: Keyboard
) -> list[tuple[int, str, Keyboard | None]]:
    """(message id, text, buttons) to edit: each part of the delivered card the press is
    under, when its parts still match the card's; else the pressed part only."""
    for ids in app.store.card_messages(call.id):
        if (
            press.message_id in ids
            and len(ids) == len(card.parts)
            and ids.index(press.message_id) == card.keyboard_part
        ):
            return [
                (message_id, part, keyboard if index == card.keyboard_part else None)
                for index, (message_id, part) in enumerate(zip(ids, card.parts, strict=True))
            ]
    return [(press.message_id, card.parts[card.keyboard_part], keyboard)]


def _fresh(app: App, press: Press, card: Card, keyboard: Keyboard, now: int) -> None:
    """The card as it is now, as a reply to the pressed one, `keyboard` on its buttons' part."""
    to = Destination(press.chat_id)
    for index, part in enumerate(card.parts):
        app.pacer.turn(press.chat_id, now, patience=PATIENCE)
        reply_to = press.message_id if index == 0 else None
        app.notifier.send(part, to, reply_to, keyboard if index == card.keyboard_part else None)
