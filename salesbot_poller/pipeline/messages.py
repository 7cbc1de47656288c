"""Telegram messages (HTML parse mode), as pure functions of the call and its analysis.

Contract:
- Every dynamic value (anything from amoCRM or the model) is cleaned, cut, then escaped
  (`&`, `<`, `>`; quotes too inside `href`): a lone surrogate becomes U+FFFD (it cannot be
  encoded for Telegram or the database), control characters other than newline and tab are
  dropped, and the value is cut to a length a reader of the chat can take (`NAME_CHARS`,
  `PHONE_CHARS`, `SUMMARY_CHARS`, `ITEM_CHARS`, at most `LIST_ITEMS` items a list) with "…".
  Cutting happens before escaping, so no entity is ever cut in half.
- A message is a list of parts, each at most `LIMIT` UTF-16 code units of raw HTML (Telegram
  counts the visible text, which is never longer than the raw HTML), and none empty or only
  whitespace (Telegram refuses those, and the whole message would be lost). Parts are cut
  between blocks; a block too long by itself is cut in its plain text before escaping, so no
  part ever holds half a tag or half an entity. The first part holds the header (who, what,
  when): with every field cut, it always fits one part.
- Phone numbers are shown by `phones`: a +7 number as `+7 916 123-45-67` however amoCRM wrote
  it (`phones.display`), any other as written. They follow `telegram.mask_phones` (the `mask`
  argument; see `masked`): a masked number is `+7 999 ***-**-04` (`phones.mask`), and so is a
  number inside a card's name (amoCRM names a contact created by a call after its number; an
  unmasked one there is shown like any other). No message links a number (`tel:`): Telegram
  makes a written number clickable by itself, so a masked one is nowhere in the HTML.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import date, tzinfo

from salesbot_poller.config import MaskMode
from salesbot_poller.domain import CallAnalysis, CallContext, RubricResult, local_time
from salesbot_poller.phones import display as display_phone
from salesbot_poller.phones import mask as mask_phone
from salesbot_poller.services.dialogue import metrics_line
from salesbot_poller.services.quotes import clock
from salesbot_poller.services.redact_pii import replace_phones

LIMIT = 4096

ENTITY_RU = {"leads": "Сделка", "contacts": "Контакт", "companies": "Компания", "customers": "Покупатель"}


# Lengths a head of sales can read in a chat; a longer value is cut with "…".
NAME_CHARS = 100  # a manager, a card (lead, contact, company)
PHONE_CHARS = 40  # a number with a extension or two still fits
SUMMARY_CHARS = 2000  # the model's summary: about a screen
ITEM_CHARS = 200  # one need, objection (and its handling), risk, next step: a sentence or two
LIST_ITEMS = 8  # items shown of a list; the rest are counted

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean(text: object) -> str:
    """`str(text)` that Telegram and the database can take: each lone surrogate (a JSON escape
    like "\\ud800" decodes to one, and it cannot be encoded as UTF-8) becomes U+FFFD, and
    control characters other than newline and tab are removed (NUL, bell, terminal escapes)."""
    value = _SURROGATE.sub("\ufffd", str(text))
    return "".join(c for c in value if c in "\n\t" or unicodedata.category(c) != "Cc")


def esc(text: object) -> str:
    """`text` cleaned (see `clean`) and escaped for Telegram's HTML parse mode."""
    return html.escape(clean(text), quote=False)


def utf16_len(text: str) -> int:
    """Telegram's length: UTF-16 code units (a lone surrogate counts one, never raises)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


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


def masked(mode: MaskMode, alert: bool = False) -> bool:
    """Whether a message masks phone numbers under `telegram.mask_phones` = `mode`.

    "cards" (the default) masks the reports about a call: the card, the transcript's caption
    and the digest. `alert`: a message whose reader must call the number back (a missed-call
    alert, its escalation, a storm summary listing the numbers) masks only with "all".
    "none" masks nothing. (The reply "перезвонили" shows no number at all.)
    """
    return mode == "all" if alert else mode != "none"


def _entity_line(ctx: CallContext, mask: bool = False) -> str:
    label = ENTITY_RU.get(ctx.entity_kind, "Карточка")
    name = name_html(ctx.entity_name, mask) or esc(f"#{ctx.entity_url.rsplit('/', 1)[-1]}")
    return f'💼 {label}: <a href="{html.escape(clean(ctx.entity_url), quote=True)}">{name}</a>'


def name_html(name: str, mask: bool = False) -> str:
    """A manager's or a card's name, one line, cut and escaped; a phone number in it shown
    like any other (`phones.display`), or masked with `mask` (`phones.mask`)."""
    name = clean(name)
    return esc(clip(replace_phones(name, mask_phone if mask else display_phone), NAME_CHARS))


def phone_html(phone: str, missing: str, mask: bool = False) -> str:
    """A phone number (`phones.display`, or `phones.mask` with `mask`), one line, cut and
    escaped; `missing` when there is none."""
    value = clean(phone)
    return esc(clip((mask_phone if mask else display_phone)(value), PHONE_CHARS) or missing)


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
    """Join blocks with blank lines into as few parts as fit `limit`, in order.

    Every part is at most `limit` UTF-16 units and never empty or only whitespace: blank
    blocks are dropped, and a block too long by itself (the renderers keep theirs shorter) is
    cut between its lines, a line too long by itself in its visible text (`_cut_line`).
    """
    parts: list[str] = []
    current = ""
    for block in (piece for b in blocks if b.strip() for piece in _fit(b.strip(), limit)):
        candidate = f"{current}\n\n{block}" if current else block
        if utf16_len(candidate) <= limit:
            current = candidate
        else:
            if current:
                parts.append(current)
            current = block
    if current:
        parts.append(current)
    return parts


def _fit(block: str, limit: int) -> list[str]:
    """`block` as pieces of at most `limit` units, cut between lines (each line of our HTML
    closes its tags), a line too long by itself cut by `_cut_line`."""
    if utf16_len(block) <= limit:
        return [block]
    pieces: list[str] = []
    current = ""
    for line in block.split("\n"):
        if not line.strip():
            continue
        line = line if utf16_len(line) <= limit else _cut_line(line, limit)
        candidate = f"{current}\n{line}" if current else line
        if utf16_len(candidate) <= limit:
            current = candidate
        else:
            pieces.append(current)
            current = line
    if current:
        pieces.append(current)
    return pieces


def _cut_line(line: str, limit: int) -> str:
    """The visible text of an HTML `line`, without its tags, cut to fit `limit` and escaped:
    the last resort for a line no renderer should make (the formatting goes, the text stays)."""
    text = html.unescape(re.sub(r"<[^>]*>", "", line))
    take = limit
    while take > 1 and utf16_len(esc(text[:take]) + "…") > limit:
        take = max(1, take * 3 // 4)
    return esc(text[:take].rstrip()) + "…"


VERDICT_MARK = {"done": "✅", "partly": "🟡", "missed": "❌", "not_applicable": "➖", "not_assessed": "❔"}
SENTIMENT_RU = {"positive": "🙂 доволен", "neutral": "😐 нейтрален", "negative": "🙁 недоволен"}
EVIDENCE_CHARS = 90
CORRECTED = " (с исправлениями)"  # after the score of a card people corrected
CAPTION_LIMIT = 1024


def clip(text: str, limit: int) -> str:
    """`text` cleaned (`clean`), on one line, cut to `limit` characters at a word end, with an
    ellipsis. Plain text: escape it after."""
    text = " ".join(clean(text).split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit - 1)
    return text[: cut if cut > limit // 2 else limit - 1].rstrip(" ,.;:") + "…"


def clip_text(text: str, limit: int) -> str:
    """Like `clip`, but the line breaks stay (a summary's paragraphs)."""
    text = clean(text).strip()
    if len(text) <= limit:
        return text
    cut = max(text.rfind(" ", 0, limit - 1), text.rfind("\n", 0, limit - 1))
    return text[: cut if cut > limit // 2 else limit - 1].rstrip(" ,.;:\n") + "…"


def clip_items(items: list[str], limit: int = ITEM_CHARS, count: int = LIST_ITEMS) -> list[str]:
    """The first `count` non-blank `items`, each clipped; the rest counted in a last line."""
    kept = [clip(item, limit) for item in items if clean(item).strip()]
    if len(kept) <= count:
        return kept
    return [*kept[:count], f"… и ещё {len(kept) - count}"]


def hashtag(topic: str, closed: bool = False) -> str:
    """`#тема_звонка`, or "" when there is nothing word-like (Telegram hashtags are \\w+).
    A name of the closed list (`closed`) keeps its case and length: one tag per listed name."""
    text = topic if closed else topic.lower()
    word = "_".join("".join(c if c.isalnum() else " " for c in text).split())
    return f"#{(word if closed else word[:40]).rstrip('_')}" if word else ""


def score_line(analysis: CallAnalysis) -> str:
    score = analysis.score
    if score is None:
        assessed = any(item.verdict != "not_assessed" for item in analysis.rubric)
        why = "пункты скрипта неприменимы" if assessed else "пункты скрипта не оценены"
        return f"⭐ Оценка: — ({why})"
    unassessed = sum(item.verdict == "not_assessed" for item in analysis.rubric)
    partial = f" (не оценено пунктов: {unassessed})" if unassessed else ""
    return f"⭐ Оценка: <b>{score}</b>/100 {score_bar(score)}{partial}"


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


def _rubric_lines(analysis: CallAnalysis, corrected: Mapping[str, str]) -> list[str]:
    """One line per item: its mark and title, then the quote when it was found in the
    transcript (with its time when known), "без цитаты" when the model's quote was not found
    (never shown: it could put words in a manager's mouth), "не оценено" when not assessed.
    A quote of an analysis made before quotes were checked (`verified` None) is shown. An
    item a person corrected (`corrected`: item id -> their name) says so after its quote."""
    lines = []
    for item in analysis.rubric:
        if item.item_id in corrected:
            lines.append(_corrected_line(item, corrected[item.item_id]))
            continue
        line = f"{VERDICT_MARK[item.verdict]} {esc(clip(item.title, 120))}"
        if item.verdict == "not_assessed":
            line += " — не оценено"
        elif item.evidence and item.verdict != "not_applicable":
            if item.verified is False:
                line += " — без цитаты"
            else:
                at = f" ({clock(item.at)})" if item.at is not None else ""
                line += f" — <i>«{esc(clip(item.evidence, EVIDENCE_CHARS))}»</i>{at}"
        lines.append(line)
    return lines


def _corrected_line(item: RubricResult, by: str) -> str:
    line = f"{VERDICT_MARK[item.verdict]} {esc(clip(item.title, 120))}"
    if item.evidence and item.verified is not False:
        at = f" ({clock(item.at)})" if item.at is not None else ""
        line += f" — <i>«{esc(clip(item.evidence, EVIDENCE_CHARS))}»</i>{at}"
    return f"{line} (исправлено: {esc(clip(by, 40))})"


def _next_step_text(analysis: CallAnalysis) -> str:
    step = analysis.next_step
    action = clip(step.action, ITEM_CHARS) if step is not None else ""
    if step is None or not action:
        return "не договорились"
    if step.due_date:
        return f"{action} · до {date.fromisoformat(step.due_date):%d.%m.%Y}"
    return action


def render_conversation(
    ctx: CallContext,
    analysis: CallAnalysis,
    tz: tzinfo | None = None,
    metrics: str | None = None,
    mask: MaskMode = "cards",
    trackers: Sequence[str] = (),
    corrected: Mapping[str, str] | None = None,
) -> list[str]:
    """The analysis card of an answered call. `metrics` is an optional pre-rendered HTML line
    (conversation metrics measured from the audio), shown under the score. `mask`:
    `telegram.mask_phones` (a card masks unless "none"). `trackers`: pre-rendered HTML lines
    (`tracker_messages.card_lines`), a block under the head. `corrected`: the items people
    corrected (item id -> who), when `analysis` holds their verdicts (`domain.with_corrections`):
    each says "(исправлено: Имя)" and the score "с исправлениями"."""
    corrected = corrected or {}
    hide = masked(mask)
    direction = "📥 Входящий звонок" if ctx.direction == "in" else "📤 Исходящий звонок"
    first = f"<b>{direction}</b> · {format_duration(ctx.duration)} · {format_time(ctx.started_at, tz)}"
    if tag := hashtag(analysis.topic, analysis.topic_closed):
        first += f" · {esc(tag)}"
    head = [
        first,
        f"👤 Менеджер: <b>{name_html(ctx.manager)}</b>",
        _entity_line(ctx, hide),
        f"☎️ {phone_html(ctx.phone, 'номер не указан', hide)}",
        f"{score_line(analysis)}{CORRECTED if corrected else ''} · клиент {SENTIMENT_RU[analysis.sentiment]}",
    ]
    if ctx.profile:  # which script it was scored against: only when profiles are configured
        head.insert(1, f"📋 Профиль: <b>{esc(clip(ctx.profile, 60))}</b>")
    if metrics is None and ctx.metrics:
        metrics = esc(metrics_line(ctx.metrics))
    metrics = clean(metrics) if metrics else metrics
    if metrics:
        head.append(metrics)
    if ctx.cut_minutes:  # poller.max_call_minutes: the rest of the recording was not heard
        head.append(f"⚠️ Запись длиннее {ctx.cut_minutes} мин: разобраны первые {ctx.cut_minutes} мин")
    if analysis.condensed:
        head.append("📝 Звонок длинный: оценен по сжатому пересказу расшифровки")
    room = LIMIT - 64
    blocks = ["\n".join(head), "\n".join(trackers)]
    summary = clip_text(analysis.summary, SUMMARY_CHARS)
    if analysis.summary_missing:
        summary = "⚠️ Модель не дала разбора этого звонка (дважды): итога и оценки нет, расшифровка сохранена."
    blocks.extend(_text_blocks("Итог", summary or "—", room))
    if analysis.rubric:
        blocks.extend(_line_blocks("Скрипт", _rubric_lines(analysis, corrected), room))
    objections = [
        f"{clip(o.objection, ITEM_CHARS)} → {clip(o.handling, ITEM_CHARS) or 'не отработано'}"
        for o in analysis.objections
        if clip(o.objection, ITEM_CHARS)
    ]
    sections = [
        ("Потребности клиента", _bullets(clip_items(analysis.client_needs))),
        ("Возражения", _bullets(clip_items(objections, 2 * ITEM_CHARS + 3)) or "не было"),
        ("Следующий шаг", _next_step_text(analysis)),
        ("Риски", _bullets(clip_items(analysis.risk_flags))),
    ]
    for title, text in sections:
        if text.strip():
            blocks.extend(_text_blocks(title, text.strip(), room))
    return pack(blocks)


def render_transcript_caption(ctx: CallContext, tz: tzinfo | None = None, mask: MaskMode = "cards") -> str:
    """The caption of the transcript document (well under Telegram's 1024 for captions); it
    goes with the card, and masks like it."""
    hide = masked(mask)
    name = name_html(ctx.entity_name, hide) or phone_html(ctx.phone, "звонок", hide)
    return f"📝 Расшифровка · {name} · {format_time(ctx.started_at, tz)}"


def render_missed(ctx: CallContext, tz: tzinfo | None = None, mask: MaskMode = "cards") -> list[str]:
    """The alert for a missed incoming call: the full number, so the manager can call back
    (masked only when `mask` is "all")."""
    hide = masked(mask, alert=True)
    lines = [
        f"🔴 <b>Пропущенный звонок</b> · {format_time(ctx.started_at, tz)}",
        f"☎️ {phone_html(ctx.phone, 'номер не определён', hide)} — перезвоните клиенту",
        _entity_line(ctx, hide),
        f"👤 Ответственный: <b>{name_html(ctx.manager)}</b>",
    ]
    return pack(["\n".join(lines)])


def render_escalation(
    ctx: CallContext, sla_minutes: int, tz: tzinfo | None = None, mask: MaskMode = "cards"
) -> list[str]:
    """The one escalation for a missed call nobody called back within the SLA: someone must
    still call back, so it masks like the alert."""
    hide = masked(mask, alert=True)
    lines = [
        f"⏰ <b>Не перезвонили за {sla_minutes} мин</b>",
        f"☎️ {phone_html(ctx.phone, 'номер не определён', hide)} · пропущен {format_time(ctx.started_at, tz)}",
        _entity_line(ctx, hide),
        f"👤 Ответственный: <b>{name_html(ctx.manager)}</b>",
    ]
    return pack(["\n".join(lines)])


def render_callback(manager: str, called_at: int, missed_at: int, tz: tzinfo | None = None) -> list[str]:
    """The reply to a missed-call alert: the call was returned, when and by whom."""
    minutes = max(0, called_at - missed_at) // 60
    head = f"✅ <b>Перезвонили</b> · {format_time(called_at, tz)} (через {minutes} мин)"
    return pack([f"{head}\n👤 {name_html(manager)}"])
