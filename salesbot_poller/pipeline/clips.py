"""A quote's audio clip, sent when its button under a card is pressed.

Contract of `send_clip(app, call_id, second, quote, chat_id, reply_to, now)`:
- It answers None when the clip went to `chat_id` as a reply to the card (`reply_to`), or
  the short text to show the presser (answerCallbackQuery): `GONE` when the call's audio is
  no longer kept (`storage.clip_days` passed, retention, `forget`, a call that never had
  any), `FAILED` with the reason when the audio is damaged or Telegram refused the clip.
  It raises nothing a caller must catch; each failure is one log line.
- The clip spans [second - `telegram.clip_before_seconds`, second +
  `telegram.clip_after_seconds`), clamped to the recording, cut from the kept audio
  (`services.clips.cut_clip`: both channels of a stereo call mixed), and goes as a voice
  message with the caption "Иван Петров · 02:30 · «quote»" (HTML, within Telegram's 1024
  characters). A chat refusing voice messages (`errors.VoiceForbidden`) gets it as an audio
  file instead.
- Telegram's file id of a sent clip is stored (`clip` table, by call and second): a second
  press re-sends it by that id, so the same clip is never cut nor uploaded twice. A stored id
  Telegram no longer takes is replaced by a fresh cut.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import peewee

from salesbot_poller.domain import Destination
from salesbot_poller.errors import PermanentError, SalesbotError, VoiceForbidden
from salesbot_poller.pipeline.context import App
from salesbot_poller.pipeline.messages import CAPTION_LIMIT, clip, esc, utf16_len
from salesbot_poller.services.clip_files import ClipIndex, clip_dir, expired, keep_days, read_index
from salesbot_poller.services.clips import cut_clip
from salesbot_poller.services.quotes import clock

log = logging.getLogger(__name__)

GONE = "Запись уже удалена (хранится {days} дней)"
NOT_KEPT = "Записи звонков не хранятся (storage.clip_days = 0)"
FAILED = "не удалось отправить запись: {reason}"
ANSWER_LIMIT = 200  # answerCallbackQuery's text


def send_clip(
    app: App, call_id: int, second: float, quote: str, chat_id: str, reply_to: int | None, now: int
) -> str | None:
    """Send the clip of the quote at `second` of call `call_id`; see the module contract."""
    storage, telegram = app.config.storage, app.config.telegram
    days = keep_days(storage.clip_days, storage.retention_days)
    if days <= 0:
        return NOT_KEPT
    at = max(0, int(second))
    where = f"call {call_id}: clip at {clock(at)}"
    call = app.store.find_call(call_id)
    try:
        index = read_index(clip_dir(storage.audio_dir, call_id)) if call is not None else None
    except ValueError as exc:
        log.warning("%s: its audio is unreadable: %s", where, exc)
        return FAILED.format(reason="запись повреждена")
    if index is None or expired(index, now, days):
        log.info("%s: its audio is no longer kept (storage.clip_days = %d)", where, days)
        return GONE.format(days=days)
    caption = _caption(call.manager_name if call is not None else None, at, quote)
    to = Destination(chat_id, None)
    stored = app.store.stored_clip(call_id, at)
    if stored is not None:
        resend = app.notifier.send_voice_id if stored.kind == "voice" else app.notifier.send_audio_id
        try:
            resend(stored.file_id, caption, to, reply_to)
            log.info("%s: sent again by its file id (%s)", where, stored.kind)
            return None
        except PermanentError as exc:  # the id is no longer good (another bot token): cut it again
            log.info("%s: its stored file id was refused (%s): cut again", where, exc)
        except SalesbotError as exc:
            log.warning("%s: not sent: %s", where, exc)
            return _failed(str(exc))
    started = time.monotonic()
    data = _cut(index, second - telegram.clip_before_seconds, second + telegram.clip_after_seconds, where)
    if isinstance(data, str):
        return data
    cut_seconds = time.monotonic() - started
    try:
        try:
            file_id, kind = app.notifier.send_voice(data, caption, to, reply_to), "voice"
        except VoiceForbidden:
            log.info("%s: the chat takes no voice messages: sent as an audio file", where)
            file_id, kind = app.notifier.send_audio(data, caption, to, reply_to), "audio"
    except SalesbotError as exc:
        log.warning("%s: not sent: %s", where, exc)
        return _failed(str(exc))
    try:
        app.store.save_clip(call_id, at, file_id, kind, now)
    except peewee.DatabaseError as exc:  # sent: only the next press cuts it again
        log.warning("%s: sent, its file id not stored (%s)", where, type(exc).__name__)
    log.info("%s: sent (%s, %d KB, cut in %.2f s)", where, kind, len(data) // 1024, cut_seconds)
    return None


def _cut(index: ClipIndex, start: float, end: float, where: str) -> bytes | str:
    """The clip's OGG/Opus bytes, or the text for the presser (the failure is logged)."""
    with tempfile.TemporaryDirectory(prefix="salesbot-clip-") as tmp:
        out = Path(tmp) / "clip.ogg"
        try:
            cut_clip(index, start, end, out)
        except PermanentError as exc:
            log.warning("%s: cannot be cut: %s", where, exc)
            return FAILED.format(reason="запись повреждена")
        except ValueError as exc:
            log.warning("%s: cannot be cut: %s", where, exc)
            return FAILED.format(reason="этот момент вне записи")
        except OSError as exc:
            log.warning("%s: cannot be cut: %s", where, exc.strerror or exc)
            return FAILED.format(reason="нет места для записи")
        return out.read_bytes()


def _failed(reason: str) -> str:
    text = FAILED.format(reason=reason)
    return text if len(text) <= ANSWER_LIMIT else text[: ANSWER_LIMIT - 1] + "…"


def _caption(manager: str | None, at: int, quote: str) -> str:
    """ "Иван Петров · 02:30 · «quote»" in HTML; the quote cut to fit Telegram's caption."""
    head = " · ".join(part for part in (esc(clip(manager or "", 60)), clock(at)) if part)
    room = CAPTION_LIMIT - utf16_len(head) - len(" · «»")
    text = clip(quote, room)
    while utf16_len(text) > room:  # characters outside the BMP count twice in Telegram's limit
        text = clip(text, len(text) - (utf16_len(text) - room) - 1)
    return f"{head} · «{esc(text)}»" if text else head
