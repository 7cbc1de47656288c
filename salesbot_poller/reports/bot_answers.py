"""What the bot answers to each command of the head of sales: pure rendering over
the store, no sending (see `bot` for who may ask and how answers go out).

Contract of `answer(app, name, args, now)`: the answer's parts (HTML, escaped, split like
cards by `messages.pack`) and, for `/call`, the transcript as a document; or `CommandFailed`
with one line saying why (an unknown command, a bad argument, a call that is not there).
- `/stats [manager] [7d|30d]`: the weekly report's figures (`weekly.render_team`) for the
  last 7 days (default) or 30, with the change against the period before; with a manager
  (any part of the name, any case), that manager only.
- `/call ID`: the call's card again (the analysis card as people corrected it, with the
  card's buttons on the part showing the rubric when cards have buttons:
  `corrections.card`; or the missed-call alert), its transcript as a .txt document when it
  is stored.
- `/worst [N]`: the N (default 5, at most 20) lowest-scored calls of the last 7 days (their
  scores as people corrected them; the latest first on a tie), with links to their amoCRM cards.
- `/stats` and `/worst` are counted and sorted by the database (no call row, transcript nor
  stored analysis of the period is loaded).
- `/missed`: missed calls of the last 7 days not yet returned, oldest first, with their
  numbers (masked only under `telegram.mask_phones = "all"`: someone must call back).
- `/find текст`: at most 10 calls whose transcript holds every word (`Store.find_calls`),
  newest first, each with the words in context. `/find` with a phone number (a +7 one in any
  form, `8 (916) 123-45-67`, `79161234567`, or one written with "+"; `phones.dialable`) lists
  instead the latest `FIND_BY_NUMBER` calls with that number (`phones.key`), newest first;
  the number in the answer is masked like the cards.
- `/tracker NAME [7|30]`: a tracker's calls per manager and its latest hits (`tracker_report`).
- `/help`: the list.
Numbers in cards, names and quotes follow `telegram.mask_phones` like the cards.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from salesbot_poller.domain import MANAGER_UNKNOWN, Keyboard
from salesbot_poller.phones import dialable, key
from salesbot_poller.phones import mask as mask_phone
from salesbot_poller.pipeline import corrections
from salesbot_poller.pipeline.context import App, call_context
from salesbot_poller.pipeline.messages import (
    clean,
    clip,
    esc,
    format_time,
    masked,
    name_html,
    pack,
    phone_html,
    render_conversation,
    render_missed,
    render_transcript_caption,
)
from salesbot_poller.pipeline.tracker_messages import card_lines
from salesbot_poller.reports import team_stats, tracker_report, weekly
from salesbot_poller.reports.topics import topic_block
from salesbot_poller.services.redact_pii import replace_phones
from salesbot_poller.store import Call
from salesbot_poller.store.search import query_words

DAY = 24 * 3600
RECENT_DAYS = 7
WORST_DEFAULT, WORST_MAX = 5, 20
MISSED_SHOWN = 30
SNIPPET_CHARS = 70
FIND_BY_NUMBER = 10

HELP = """<b>Команды</b>
/stats [менеджер] [7d|30d] — цифры отдела или одного менеджера за 7 или 30 дней
/call ID — карточка звонка ещё раз и расшифровка файлом
/worst [N] — N звонков с самой низкой оценкой за 7 дней
/missed — пропущенные за 7 дней, по которым ещё не перезвонили
/find текст — звонки, в расшифровке которых есть эти слова (до 10)
/find номер — звонки с этим номером, как бы он ни был записан (до 10)
/tracker НАЗВАНИЕ [7|30] — трекер: звонки по менеджерам и последние попадания с цитатами
/help — эта справка"""


class CommandFailed(Exception):
    """A command that cannot be answered; the text (plain, Russian) is the one line the asker gets."""


@dataclass(frozen=True)
class Document:
    filename: str
    text: str
    caption: str


@dataclass(frozen=True)
class Answer:
    parts: list[str]
    document: Document | None = None
    keyboard: Keyboard | None = None  # inline buttons under the part `keyboard_part`
    keyboard_part: int = 0


def answer(app: App, name: str, args: list[str], now: int) -> Answer:
    """See the module contract."""
    if name == "help" or name == "start":
        return Answer(pack([HELP]))
    if name == "stats":
        return Answer(stats(app, args, now))
    if name == "call":
        return call_card(app, args)
    if name == "worst":
        return Answer(worst(app, args, now))
    if name == "missed":
        return Answer(missed(app, now))
    if name == "find":
        return Answer(find(app, " ".join(args)))
    if name == "tracker":
        try:
            return Answer(tracker_report.answer(app, args, now))
        except tracker_report.UnknownTracker as exc:
            raise CommandFailed(str(exc)) from None
    raise CommandFailed(f"не знаю команды /{name}; /help — список команд")


def _link(app: App, call: Call, hide: bool) -> str:
    url = app.source.entity_url(call.entity_type, call.entity_id)
    text = name_html(call.entity_name or "", hide) or esc(f"#{call.entity_id}")
    return f'<a href="{html.escape(clean(url), quote=True)}">{text}</a>'


def _head(app: App, call: Call) -> str:
    return f"{format_time(call.event_created_at, app.tz)} · {name_html(call.manager_name or MANAGER_UNKNOWN)}"


def stats(app: App, args: list[str], now: int) -> list[str]:
    days, words = RECENT_DAYS, []
    for arg in args:
        period = re.fullmatch(r"(\d+)[dд]", arg.lower())
        if period is None:
            words.append(arg)
        elif int(period[1]) in (7, 30):
            days = int(period[1])
        else:
            raise CommandFailed(f"период {arg}: можно 7d или 30d")
    start = now - days * DAY
    # Counted by the database: a month of calls never comes into memory with its transcripts.
    current = team_stats.figures_in_store(app.store, start, now)
    before = team_stats.averages_in_store(app.store, start - days * DAY, start)
    for manager in current.managers:
        manager.previous = before.get(manager.name)
    who = " ".join(words)
    if who:
        current.managers = [m for m in current.managers if who.lower() in m.name.lower()]
        if not current.managers:
            raise CommandFailed(f"нет звонков менеджера «{who}» за {days} дней")
    head = f"📊 <b>Статистика за {days} дней</b> · {format_time(start, app.tz)} – {format_time(now, app.tz)}"
    topics = None if who else topic_block(app, start, now)  # the team's topics, not one manager's
    return weekly.render_team(head, current, [topics] if topics else [])


def call_card(app: App, args: list[str]) -> Answer:
    if len(args) != 1 or not args[0].lstrip("#").isdigit():
        raise CommandFailed("укажите номер звонка: /call 123")
    call = app.store.find_call(int(args[0].lstrip("#")))
    if call is None:
        raise CommandFailed(f"звонка #{args[0].lstrip('#')} нет")
    mask = app.config.telegram.mask_phones
    ctx = call_context(app, call)
    analysis = team_stats.read_analysis(call)
    keyboard: Keyboard | None = None
    keyboard_part = 0
    if call.kind == "missed":
        parts = render_missed(ctx, app.tz, mask)
    elif analysis is not None and (card := corrections.card(app, call)) is not None:
        parts = card.parts
        if corrections.buttons_on(app) and card.keyboard and not call.personal_removed_at:
            keyboard, keyboard_part = card.keyboard, card.keyboard_part
    elif analysis is not None:
        hits, missing = app.store.call_trackers(call.id)
        parts = render_conversation(ctx, analysis, app.tz, mask=mask, trackers=card_lines(hits, missing))
    else:
        raise CommandFailed(f"звонок #{call.id} ещё не разобран (этап: {call.stage})")
    document = None
    if call.transcript:
        caption = render_transcript_caption(ctx, app.tz, mask)
        document = Document(f"call-{call.id}-transcript.txt", call.transcript, caption)
    elif call.personal_removed_at:
        parts = pack([*parts, "<i>Расшифровка удалена (срок хранения или запрос на удаление).</i>"])
    return Answer(parts, document, keyboard, keyboard_part)


def worst(app: App, args: list[str], now: int) -> list[str]:
    count = WORST_DEFAULT
    if args:
        if len(args) > 1 or not args[0].isdigit() or not 1 <= int(args[0]) <= WORST_MAX:
            raise CommandFailed(f"N — число от 1 до {WORST_MAX}: /worst 5")
        count = int(args[0])
    hide = masked(app.config.telegram.mask_phones)
    # Sorted and cut by the database: only the lines' columns of `count` calls come back.
    lowest = app.store.lowest_scored(now - RECENT_DAYS * DAY, now, count)
    lines = [f"{score}/100 · {_head(app, call)} · {_link(app, call, hide)} · /call {call.id}" for score, call in lowest]
    head = f"📉 <b>Худшие звонки за {RECENT_DAYS} дней</b>"
    return pack([head, "\n".join(lines) or "Оценённых звонков не было."])


def missed(app: App, now: int) -> list[str]:
    hide = masked(app.config.telegram.mask_phones, alert=True)
    calls = app.store.unreturned_missed(now - RECENT_DAYS * DAY)
    lines = [
        f"{_head(app, call)} · ☎️ {phone_html(call.phone or '', 'номер не определён', hide)}"
        f" · {_link(app, call, masked(app.config.telegram.mask_phones))} · /call {call.id}"
        for call in calls[:MISSED_SHOWN]
    ]
    if len(calls) > MISSED_SHOWN:
        lines.append(f"… и ещё {len(calls) - MISSED_SHOWN}")
    head = f"🔴 <b>Не перезвонили</b> · {len(calls)} за {RECENT_DAYS} дней, сначала давние"
    return pack([head, "\n".join(lines) or "Все пропущенные перезвонены."])


def snippet(transcript: str, words: list[str], hide: bool) -> str:
    """The transcript around the first of `words` found in it, one line, cut, escaped."""
    text = " ".join(clean(transcript).split())
    lowered = text.lower()
    found = [i for i in (lowered.find(word.lower()) for word in words) if i >= 0]
    at = min(found) if found else 0
    start = max(0, at - SNIPPET_CHARS // 3)
    piece = text[start : start + 2 * SNIPPET_CHARS]
    if start:  # from a word's start, never from its middle
        piece = "…" + piece[piece.find(" ") + 1 :] if " " in piece[: at - start] else "…" + piece
    piece = replace_phones(piece, mask_phone) if hide else piece
    return esc(clip(piece, SNIPPET_CHARS))


def find_number(app: App, number: str, written: str) -> list[str]:
    """The latest calls with `number` (a `phones.key`), newest first; `written`: as asked."""
    hide = masked(app.config.telegram.mask_phones)
    calls = app.store.calls_with_number(key, number)[::-1]
    asked = phone_html(written, "", hide)
    blocks = [f"🔎 <b>Звонков с номером {asked}: {len(calls)}</b>, сначала новые"]
    blocks += [f"{_head(app, call)} · {_link(app, call, hide)} · /call {call.id}" for call in calls[:FIND_BY_NUMBER]]
    if not calls:
        blocks.append("Ничего не нашлось.")
    return pack(blocks)


def find(app: App, text: str) -> list[str]:
    number = dialable(text)
    if number:
        return find_number(app, number, text)
    words = query_words(text)
    if not words:
        raise CommandFailed("напишите, что искать: /find доставка")
    hide = masked(app.config.telegram.mask_phones)
    calls = app.store.find_calls(text)
    blocks = [f"🔎 <b>Найдено: {len(calls)}</b> · «{esc(clip(' '.join(words), 100))}», сначала новые"]
    for call in calls:
        blocks.append(
            f"{_head(app, call)} · {_link(app, call, hide)} · /call {call.id}\n"
            f"<i>{snippet(call.transcript or '', words, hide)}</i>"
        )
    if not calls:
        blocks.append("Ничего не нашлось.")
    return pack(blocks)
