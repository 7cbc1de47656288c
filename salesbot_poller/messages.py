"""Telegram messages (HTML parse mode), as pure functions of the call and its analysis.

Contract:
- Every dynamic value is escaped (`&`, `<`, `>`; quotes too inside `href`).
- A message is a list of parts, each at most `LIMIT` UTF-16 code units of raw HTML (Telegram
  counts the visible text, which is never longer than the raw HTML). Parts are cut between
  blocks; a block too long by itself is cut in its plain text before escaping, so no part
  ever holds half a tag or half an entity.
"""

from __future__ import annotations

import html
from datetime import datetime, tzinfo

from salesbot_poller.dialogue import metrics_line
from salesbot_poller.domain import CallAnalysis, CallContext

LIMIT = 4096

ENTITY_RU = {"leads": "Сделка", "contacts": "Контакт", "companies": "Компания", "customers": "Покупатель"}


def esc(text: object) -> str:
    return html.escape(str(text), quote=False)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def format_duration(seconds: int) -> str:
    minutes, secs = divmod(max(0, seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_time(timestamp: int, tz: tzinfo | None) -> str:
    """Local time of the server (set TZ= in the unit), or `tz` when given."""
    moment = datetime.fromtimestamp(timestamp, tz) if tz else datetime.fromtimestamp(timestamp).astimezone()
    return moment.strftime("%d.%m %H:%M")


def score_bar(score: int) -> str:
    filled = round(max(0, min(100, score)) / 10)
    return "▰" * filled + "▱" * (10 - filled)


def _entity_line(ctx: CallContext) -> str:
    label = ENTITY_RU.get(ctx.entity_kind, "Карточка")
    name = ctx.entity_name or f"#{ctx.entity_url.rsplit('/', 1)[-1]}"
    return f'💼 {label}: <a href="{html.escape(ctx.entity_url, quote=True)}">{esc(name)}</a>'


def _text_blocks(title: str, text: str, room: int) -> list[str]:
    """`<b>title</b>` and `text`, as blocks of at most `room` units, cut in the plain text."""
    head = f"<b>{esc(title)}</b>\n"
    blocks: list[str] = []
    rest = text
    while rest:
        take = len(rest)
        # Shrink the plain-text piece until its escaped form fits; prefer a line or word end.
        while utf16_len(head + esc(rest[:take])) > room:
            take = max(1, take * 3 // 4)
        if take < len(rest):
            cut = max(rest.rfind("\n", 0, take), rest.rfind(" ", 0, take))
            take = cut if cut > take // 2 else take
        blocks.append(head + esc(rest[:take].strip()))
        rest = rest[take:].lstrip()
        head = f"<b>{esc(title)}</b> (продолжение)\n"
    return blocks


def _bullets(items: list[str]) -> str:
    return "\n".join(f"• {item}" for item in items if item.strip())


def pack(blocks: list[str], limit: int = LIMIT) -> list[str]:
    """Join blocks with blank lines into as few parts as fit `limit`."""
    parts: list[str] = []
    current = ""
    for block in blocks:
        candidate = f"{current}\n\n{block}" if current else block
        if utf16_len(candidate) <= limit:
            current = candidate
        else:
            parts.append(current)
            current = block
    if current:
        parts.append(current)
    return parts


def render_conversation(ctx: CallContext, analysis: CallAnalysis, tz: tzinfo | None = None) -> list[str]:
    """The analysis card of an answered call."""
    direction = "📥 Входящий звонок" if ctx.direction == "in" else "📤 Исходящий звонок"
    header = "\n".join(
        [
            f"<b>{direction}</b> · {format_duration(ctx.duration)} · {format_time(ctx.started_at, tz)}",
            f"👤 Менеджер: <b>{esc(ctx.manager)}</b>",
            _entity_line(ctx),
            f"☎️ {esc(ctx.phone or 'номер не указан')}",
            f"⭐ Оценка: <b>{analysis.score}</b>/100 {score_bar(analysis.score)}",
            *([esc(metrics_line(ctx.metrics))] if ctx.metrics else []),
        ]
    )
    room = LIMIT - 64
    blocks = [header]
    sections = [
        ("Итог", analysis.summary),
        ("Что хорошо", _bullets(analysis.went_well)),
        ("Что улучшить", _bullets(analysis.to_improve)),
        ("Возражения клиента", _bullets(analysis.objections) or "не было"),
        ("Следующий шаг", analysis.next_step or "не договорились"),
    ]
    for title, text in sections:
        if text.strip():
            blocks.extend(_text_blocks(title, text.strip(), room))
    return pack(blocks)


def render_missed(ctx: CallContext, tz: tzinfo | None = None) -> list[str]:
    """The alert for a missed incoming call: the full number, so the manager can call back."""
    lines = [
        f"🔴 <b>Пропущенный звонок</b> · {format_time(ctx.started_at, tz)}",
        f"☎️ {esc(ctx.phone or 'номер не определён')} — перезвоните клиенту",
        _entity_line(ctx),
        f"👤 Ответственный: <b>{esc(ctx.manager)}</b>",
    ]
    return pack(["\n".join(lines)])
