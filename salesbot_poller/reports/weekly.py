"""The weekly team report for the head of sales, at `telegram.weekly_report` ("mon 09:00").

Contract of `run(app, cycle)` (once per intake pass, like the digest):
- Due once this week's report moment (the day and time in `amocrm.timezone`) has passed and
  the report of the week before it (key `weekly:<its Monday>`) is not stored yet: a process
  started later that week still sends it; a week missed entirely is not sent afterwards
  (`report --week` sends any past week on demand).
- It covers the calendar week Monday 00:00 – Monday 00:00 (local) before the report moment
  and goes to the alert chat (`telegram.alert_chat_id`, else the default chat). Its text
  (`render_week`): per manager calls, talk time, average score and its change against the
  week before (▲/▼), missed calls and how many were returned, the weakest rubric item; the
  rubric items the team skips (`team_stats.team_misses`); the week's most frequent client
  objections, grouped by the chat model in ONE request (`App.objections`, given the first
  `OBJECTIONS_GROUPED` of them; its tokens recorded as usage of kind "objections"); without a
  grouper, or when that request fails, identical texts are counted instead (from one row per
  distinct text, `Store.objection_totals`) and the report still goes; with a closed topic list, the calls
  per topic (`reports.topics`); the top trackers and the expected ones not said, with the
  change against the week before (`tracker_report.week_block`); when people corrected verdicts
  in Telegram that week, how often the model agreed with them (`corrections_block`). Then a chart (`weekly_chart`): each
  manager's average score per week over the last `CHART_WEEKS` weeks, as a photo.
- Every figure is counted by the database (`team_stats`, `Store.week_scores`, ...): no call
  row, transcript nor stored analysis of the period is loaded (issue 29).
- Stored before sending and each part's acceptance recorded (`delivery`): sent once per week,
  even across restarts. In a dry run it is printed instead, and nothing is recorded.
- `plan_week(app, monday, now, key)` builds the items for any week (the `report` command).
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta, tzinfo

from salesbot_poller.config import WEEKDAYS
from salesbot_poller.domain import OBJECTIONS_GROUPED, ObjectionGroup, Planned, local_time
from salesbot_poller.errors import SalesbotError
from salesbot_poller.pipeline.context import App, Cycle
from salesbot_poller.pipeline.delivery import send_scheduled
from salesbot_poller.pipeline.messages import clip, esc, format_duration, name_html, pack
from salesbot_poller.pipeline.routing import alert_destination
from salesbot_poller.reports import corrections_block, team_stats, tracker_report
from salesbot_poller.reports.topics import topic_block
from salesbot_poller.reports.weekly_chart import render_chart
from salesbot_poller.store.report_figures import ObjectionTotal

log = logging.getLogger(__name__)

KIND = "weekly"
CHART_WEEKS = 8
OBJECTION_LINES = 6
MISS_LINES = 3
WEEK = timedelta(days=7)


def parse_spec(spec: str) -> tuple[int, time]:
    """ "mon 09:00" -> (0, 09:00). The config has checked the form."""
    day, moment = spec.split()
    return WEEKDAYS.index(day), time.fromisoformat(moment)


def monday_of(day: date) -> date:
    return day - timedelta(days=day.weekday())


def midnight(day: date, tz: tzinfo | None) -> int:
    """Unix time of local midnight starting `day` (`tz`; None: the server's zone)."""
    moment = datetime.combine(day, time(0))
    return int((moment.replace(tzinfo=tz) if tz else moment.astimezone()).timestamp())


def due_week(spec: str, now: int, tz: tzinfo | None) -> date | None:
    """The Monday of the week to report on, once this week's report moment has passed; else None."""
    weekday, at = parse_spec(spec)
    local = local_time(now, tz)
    this_monday = monday_of(local.date())
    moment = datetime.combine(this_monday + timedelta(days=weekday), at, local.tzinfo)
    return this_monday - WEEK if local >= moment else None


def change_text(change: int | None) -> str:
    if change is None:
        return ""
    if change == 0:
        return " (= как неделей раньше)"
    return f" ({'▲' if change > 0 else '▼'} {abs(change)})"


def manager_block(manager: team_stats.ManagerFigures, with_change: bool = True) -> str:
    average = "—" if manager.average is None else str(manager.average)
    lines = [
        f"👤 <b>{name_html(manager.name)}</b>",
        f"📞 звонков {manager.calls} · 🕒 разговор {format_duration(manager.talk_seconds)}"
        f" · ⭐ средняя {average}{change_text(manager.change) if with_change else ''}",
        f"🔴 пропущено {manager.missed}, перезвонили {manager.returned}",
    ]
    if manager.weakest is not None:
        title, share = manager.weakest
        lines.append(f"📉 Слабое место: {esc(clip(title, 120))} ({share}%)")
    return "\n".join(lines)


def _one(count: int) -> bool:
    """Whether Russian takes the singular after `count` (1, 21, 101, not 11)."""
    return count % 10 == 1 and count % 100 != 11


def _skip_text(skipping: int, of: int) -> str:
    """Text like "пропускает 1 из 3 менеджеров", "пропускают 2 из 21 менеджера" (verb and noun agree)."""
    verb = "пропускает" if _one(skipping) else "пропускают"
    noun = "менеджера" if _one(of) else "менеджеров"
    return f"{verb} {skipping} из {of} {noun}"


def misses_block(misses: Sequence[team_stats.TeamMiss]) -> str:
    if not misses:
        return ""
    lines = [f"• {_skip_text(miss.skipping, miss.of)}: {esc(clip(miss.title, 120))}" for miss in misses[:MISS_LINES]]
    return "<b>🧩 Команда пропускает</b>\n" + "\n".join(lines)


def objections_block(groups: Sequence[ObjectionGroup], total: int) -> str:
    if not total:
        return "<b>💬 Возражения клиентов</b>\nВозражений не было."
    lines = [f"• {esc(clip(group.title, 80))} — {group.count}" for group in groups[:OBJECTION_LINES]]
    return f"<b>💬 Частые возражения клиентов</b> (всего {total})\n" + "\n".join(lines)


def render_team(
    head: str, figures: team_stats.Figures, extra: Sequence[str] = (), with_change: bool = True
) -> list[str]:
    """A report's parts: `head` (HTML), one block per manager, the team's skipped items, then `extra` blocks."""
    blocks = [head]
    if not figures.managers:
        blocks.append("Звонков не было.")
    blocks.extend(manager_block(manager, with_change) for manager in figures.managers)
    blocks.append(misses_block(team_stats.team_misses(figures.managers)))
    blocks.extend(extra)
    return pack(blocks)


def _normalised(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def count_identical(totals: Sequence[ObjectionTotal]) -> list[ObjectionGroup]:
    """The fallback grouping: the same words (case and punctuation aside) count as one objection,
    titled as first met; most frequent first, then in the order first met. `totals`: one per
    distinct stored text (`Store.objection_totals`)."""
    groups: dict[str, tuple[tuple[int, int], str, int]] = {}  # words -> (first met, its text, count)
    for total in totals:
        key = _normalised(total.text)
        if not key:
            continue
        first, text, count = groups.get(key, (total.first, total.text, 0))
        if total.first <= first:
            first, text = total.first, total.text
        groups[key] = (first, text, count + total.count)
    ranked = sorted(groups.values(), key=lambda group: (-group[2], group[0]))
    return [ObjectionGroup(text.strip(), count) for _, text, count in ranked]


def group_objections(
    app: App, start: int, end: int, totals: Sequence[ObjectionTotal], now: int
) -> list[ObjectionGroup]:
    """The week's grouping (one chat request over its first `OBJECTIONS_GROUPED` objections,
    its tokens recorded), or identical texts counted."""
    if not any(total.text.strip() for total in totals):
        return []
    if app.objections is None:
        return count_identical(totals)
    try:
        grouping = app.objections.group(app.store.objection_texts(start, end, OBJECTIONS_GROUPED))
    except SalesbotError as exc:
        log.warning("weekly report: objections not grouped (%s); identical ones are counted instead", exc)
        return count_identical(totals)
    app.store.add_usage(
        call_id=None,
        at=now,
        kind="objections",
        model=grouping.usage.model,
        input_tokens=grouping.usage.input_tokens,
        output_tokens=grouping.usage.output_tokens,
    )
    return grouping.groups or count_identical(totals)


def chart_series(app: App, monday: date, names: Sequence[str]) -> tuple[dict[str, list[int | None]], list[str]]:
    """Each manager's weekly averages over the `CHART_WEEKS` weeks ending with `monday`'s, the
    report's managers first, and the weeks' labels."""
    mondays = [monday - WEEK * n for n in range(CHART_WEEKS - 1, -1, -1)]
    starts = [midnight(day, app.tz) for day in mondays]
    # The last week ends a week after its start or at the next local Monday, whichever is first
    # (they differ by the hour a clock change moves).
    end = min(starts[-1] + int(WEEK.total_seconds()), midnight(monday + WEEK, app.tz))
    averages = team_stats.weekly_averages_in_store(app.store, starts, end)
    ordered = [name for name in names if name in averages]
    ordered += sorted((n for n in averages if n not in ordered), key=lambda n: -sum(v is not None for v in averages[n]))
    return {name: averages[name] for name in ordered}, [f"{day:%d.%m}" for day in mondays]


def plan_week(app: App, monday: date, now: int, key: str) -> list[Planned]:
    """The report of the week starting `monday` (local): its text, then its chart."""
    start, end = midnight(monday, app.tz), midnight(monday + WEEK, app.tz)
    week = team_stats.figures_in_store(app.store, start, end)
    previous = team_stats.averages_in_store(app.store, midnight(monday - WEEK, app.tz), start)
    for manager in week.managers:
        manager.previous = previous.get(manager.name)
    last_day = monday + timedelta(days=6)
    head = f"📈 <b>Итоги недели</b> · {monday:%d.%m} – {last_day:%d.%m.%Y}"
    totals = app.store.objection_totals(start, end)
    groups = group_objections(app, start, end, totals, now)
    said = sum(total.count for total in totals if total.text.strip())  # blank ones are no objection
    trackers = tracker_report.week_block(app.store, start, end)
    topics = topic_block(app, start, end)
    agreement = corrections_block.week_line(app.store, start, end)
    blocks = [objections_block(groups, said), *([topics] if topics else []), trackers]
    blocks += [agreement] if agreement else []
    parts = render_team(head, week, blocks)
    series, labels = chart_series(app, monday, [m.name for m in week.managers])
    png = render_chart(series, labels, f"Средняя оценка по неделям, {labels[0]} – {last_day:%d.%m.%Y}")
    caption = f"📊 Средняя оценка менеджеров по неделям · {CHART_WEEKS} недель до {last_day:%d.%m.%Y}"
    to = alert_destination(app.config)
    return [
        Planned(key, KIND, to, {"parts": parts}),
        Planned(f"{key}:chart", KIND, to, {"photo": base64.b64encode(png).decode("ascii"), "caption": caption}),
    ]


def run(app: App, cycle: Cycle) -> None:
    """See the module contract."""
    spec = app.config.telegram.weekly_report
    if not spec:
        return
    monday = due_week(spec, cycle.now, app.tz)
    if monday is None:
        return
    key = f"{KIND}:{monday.isoformat()}"
    send_scheduled(app, cycle, key, KIND, lambda: plan_week(app, monday, cycle.now, key))
