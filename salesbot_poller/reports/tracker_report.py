"""Trackers for people: the weekly report's block and the bot's `/tracker NAME [7|30]`.

Contract:
- `week_block(store, start, end)`: the `TOP` trackers with hits in calls of [start, end) by
  the calls they were heard in, each with the change against the period of the same length
  before ("🏷 Конкурент: 12 (+4)"), then the expected trackers not said, counted the same way;
  "" when there is nothing to show (the report shows no empty block).
- `answer(app, args, now)`: `/tracker NAME [7|30]` (the name in any case; the period in days,
  `7d`/`30d` as `/stats` takes it, default 7): per manager the calls with a hit (and, for an
  expected tracker, the calls where it was not said), then the latest `LAST` hits with their
  words, time in the call and `/call N`. An unknown name: `CommandFailed` naming the known ones.
"""

from __future__ import annotations

import re

from salesbot_poller.domain import MANAGER_UNKNOWN
from salesbot_poller.pipeline.context import App
from salesbot_poller.pipeline.messages import clip, esc, format_time, name_html, pack
from salesbot_poller.services.quotes import clock
from salesbot_poller.store import Store

TOP = 5
LAST = 5
DAY = 24 * 3600
NAME_CHARS = 60
PHRASE_CHARS = 90


class UnknownTracker(ValueError):
    """`/tracker` with a name no tracker has, or a bad period: the one line the asker gets."""


def _change(now: int, before: int) -> str:
    delta = now - before
    return "=" if delta == 0 else f"{delta:+d}".replace("-", "−")


def week_block(store: Store, start: int, end: int) -> str:
    """See the module contract."""
    before_start = start - (end - start)
    lines = []
    hits, hits_before = store.tracker_call_counts(start, end), store.tracker_call_counts(before_start, start)
    for name, count in sorted(hits.items(), key=lambda item: (-item[1], item[0]))[:TOP]:
        lines.append(f"🏷 {esc(clip(name, NAME_CHARS))}: {count} ({_change(count, hits_before.get(name, 0))})")
    misses, misses_before = store.tracker_miss_counts(start, end), store.tracker_miss_counts(before_start, start)
    for name, count in sorted(misses.items(), key=lambda item: (-item[1], item[0]))[:TOP]:
        lines.append(
            f"⚠️ не сказано {esc(clip(name, NAME_CHARS))}: {count} ({_change(count, misses_before.get(name, 0))})"
        )
    if not lines:
        return ""
    return "<b>🏷 Трекеры</b> (звонков, к неделе раньше)\n" + "\n".join(lines)


def _parse(app: App, args: list[str]) -> tuple[str, int]:
    days = 7
    words = list(args)
    if words and (period := re.fullmatch(r"(\d+)[dд]?", words[-1].lower())):
        if int(period[1]) not in (7, 30):
            raise UnknownTracker(f"период {words[-1]}: можно 7 или 30")
        days = int(period[1])
        words.pop()
    wanted = " ".join(words).strip()
    known = [tracker.name for tracker in app.config.trackers]
    if not known:
        raise UnknownTracker("трекеры не настроены ([[trackers]] в конфигурации)")
    for name in known:
        if name.casefold() == wanted.casefold():
            return name, days
    listed = ", ".join(known)
    if not wanted:
        raise UnknownTracker(f"укажите трекер: /tracker НАЗВАНИЕ [7|30]; есть: {listed}")
    raise UnknownTracker(f"нет трекера «{clip(wanted, NAME_CHARS)}»; есть: {listed}")


def answer(app: App, args: list[str], now: int) -> list[str]:
    """See the module contract."""
    name, days = _parse(app, args)
    start = now - days * DAY
    expected = any(t.name == name and t.expect for t in app.config.trackers)
    period = f"{format_time(start, app.tz)} – {format_time(now, app.tz)}"
    head = f"🏷 <b>{esc(clip(name, NAME_CHARS))}</b> · за {days} дней · {period}"
    per_manager = app.store.tracker_by_manager(name, start, now + 1)
    lines = []
    for manager, said, unsaid in per_manager:
        line = f"👤 {name_html(manager or MANAGER_UNKNOWN)} — звонков с фразой: {said}"
        if expected:
            line += f", не сказано: {unsaid}"
        lines.append(line)
    blocks = [head, "\n".join(lines) or "Звонков с этим трекером не было."]
    last = app.store.last_tracker_hits(name, start, now + 1, LAST)
    if last:
        quotes = []
        for hit in last:
            words = clip(hit.phrase, PHRASE_CHARS)
            quote = f" · «{esc(words)}»" if words else ""
            at = f" ({clock(hit.at)})" if hit.at is not None else ""
            who = name_html(hit.manager or MANAGER_UNKNOWN)
            quotes.append(f"• {format_time(hit.started_at, app.tz)} · {who}{quote}{at} · /call {hit.call_id}")
        blocks.append("<b>Последние</b>\n" + "\n".join(quotes))
    return pack(blocks)
