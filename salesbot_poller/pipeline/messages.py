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
from datetime import date, tzinfo

from salesbot_poller.domain import CallAnalysis, CallContext, local_time
from salesbot_poller.services.dialogue import metrics_line

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
    moment = local_time(timestamp, tz)
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


VERDICT_MARK = {"done": "✅", "partly": "🟡", "missed": "❌", "not_applicable": "➖"}
SENTIMENT_RU = {"positive": "🙂 доволен", "neutral": "😐 нейтрален", "negative": "🙁 недоволен"}
EVIDENCE_CHARS = 90
CAPTION_LIMIT = 1024


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters at a word end, with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit - 1)
    return text[: cut if cut > limit // 2 else limit - 1].rstrip(" ,.;:") + "…"


def hashtag(topic: str) -> str:
    """`#тема_звонка`, or "" when there is nothing word-like (Telegram hashtags are \\w+)."""
    word = "_".join("".join(c if c.isalnum() else " " for c in topic.lower()).split())
    return f"#{word[:40]}" if word else ""


def score_line(score: int | None) -> str:
    if score is None:
        return "⭐ Оценка: — (пункты скрипта неприменимы)"
    return f"⭐ Оценка: <b>{score}</b>/100 {score_bar(score)}"


def _line_blocks(title: str, lines: list[str], room: int) -> list[str]:
    """`<b>title</b>` and whole HTML `lines` (each short), packed into blocks of `room` units."""
    blocks: list[str] = []
    current = f"<b>{esc(title)}</b>"
    for line in lines:
        if utf16_len(f"{current}\n{line}") > room:
            blocks.append(current)
            current = f"<b>{esc(title)}</b> (продолжение)"
        current = f"{current}\n{line}"
    blocks.append(current)
    return blocks


def _rubric_lines(analysis: CallAnalysis) -> list[str]:
    lines = []
    for item in analysis.rubric:
        line = f"{VERDICT_MARK[item.verdict]} {esc(clip(item.title, 120))}"
        if item.evidence and item.verdict != "not_applicable":
            line += f" — <i>«{esc(clip(item.evidence, EVIDENCE_CHARS))}»</i>"
        lines.append(line)
    return lines


def _next_step_text(analysis: CallAnalysis) -> str:
    step = analysis.next_step
    if step is None or not step.action.strip():
        return "не договорились"
    if step.due_date:
        return f"{step.action.strip()} · до {date.fromisoformat(step.due_date):%d.%m.%Y}"
    return step.action.strip()


def render_conversation(
    ctx: CallContext, analysis: CallAnalysis, tz: tzinfo | None = None, metrics: str | None = None
) -> list[str]:
    """The analysis card of an answered call. `metrics` is an optional pre-rendered HTML line
    (conversation metrics measured from the audio), shown under the score."""
    direction = "📥 Входящий звонок" if ctx.direction == "in" else "📤 Исходящий звонок"
    first = f"<b>{direction}</b> · {format_duration(ctx.duration)} · {format_time(ctx.started_at, tz)}"
    if tag := hashtag(analysis.topic):
        first += f" · {esc(tag)}"
    head = [
        first,
        f"👤 Менеджер: <b>{esc(ctx.manager)}</b>",
        _entity_line(ctx),
        f"☎️ {esc(ctx.phone or 'номер не указан')}",
        f"{score_line(analysis.score)} · клиент {SENTIMENT_RU[analysis.sentiment]}",
    ]
    if metrics is None and ctx.metrics:
        metrics = esc(metrics_line(ctx.metrics))
    if metrics:
        head.append(metrics)
    room = LIMIT - 64
    blocks = ["\n".join(head)]
    blocks.extend(_text_blocks("Итог", analysis.summary.strip() or "—", room))
    if analysis.rubric:
        blocks.extend(_line_blocks("Скрипт", _rubric_lines(analysis), room))
    objections = [
        f"{o.objection.strip()} → {o.handling.strip() or 'не отработано'}" for o in analysis.objections if o.objection
    ]
    sections = [
        ("Потребности клиента", _bullets(analysis.client_needs)),
        ("Возражения", _bullets(objections) or "не было"),
        ("Следующий шаг", _next_step_text(analysis)),
        ("Риски", _bullets(analysis.risk_flags)),
    ]
    for title, text in sections:
        if text.strip():
            blocks.extend(_text_blocks(title, text.strip(), room))
    return pack(blocks)


def render_transcript_caption(ctx: CallContext, tz: tzinfo | None = None) -> str:
    """The caption of the transcript document (well under Telegram's 1024 for captions)."""
    name = clip(ctx.entity_name or ctx.phone or "звонок", 200)
    return f"📝 Расшифровка · {esc(name)} · {format_time(ctx.started_at, tz)}"


def render_missed(ctx: CallContext, tz: tzinfo | None = None) -> list[str]:
    """The alert for a missed incoming call: the full number, so the manager can call back."""
    lines = [
        f"🔴 <b>Пропущенный звонок</b> · {format_time(ctx.started_at, tz)}",
        f"☎️ {esc(ctx.phone or 'номер не определён')} — перезвоните клиенту",
        _entity_line(ctx),
        f"👤 Ответственный: <b>{esc(ctx.manager)}</b>",
    ]
    return pack(["\n".join(lines)])


def render_escalation(ctx: CallContext, sla_minutes: int, tz: tzinfo | None = None) -> list[str]:
    """The one escalation for a missed call nobody called back within the SLA."""
    lines = [
        f"⏰ <b>Не перезвонили за {sla_minutes} мин</b>",
        f"☎️ {esc(ctx.phone or 'номер не определён')} · пропущен {format_time(ctx.started_at, tz)}",
        _entity_line(ctx),
        f"👤 Ответственный: <b>{esc(ctx.manager)}</b>",
    ]
    return pack(["\n".join(lines)])


def render_callback(manager: str, called_at: int, missed_at: int, tz: tzinfo | None = None) -> list[str]:
    """The reply to a missed-call alert: the call was returned, when and by whom."""
    minutes = max(0, called_at - missed_at) // 60
    return pack([f"✅ <b>Перезвонили</b> · {format_time(called_at, tz)} (через {minutes} мин)\n👤 {esc(manager)}"])
