"""A quote's moment as a voice message (issue 24, part 1): a placeholder on this branch.

Contract: `send_clip(app, call_id, second, quote, chat_id, reply_to, now)` sends the clip of
call `call_id` around `second` as a reply to `reply_to` in `chat_id`; None when it was sent,
else a short text for the presser (answerCallbackQuery). The real module replaces this one.
"""

from __future__ import annotations

from salesbot_poller.pipeline.context import App


def send_clip(
    app: App, call_id: int, second: float, quote: str, chat_id: str, reply_to: int | None, now: int
) -> str | None:
    """See the module contract."""
    return "не удалось отправить запись: ещё не готово"
