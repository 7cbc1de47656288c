"""The OLD Python path of the reports' figures, kept only as the oracle of
tests/test_report_aggregates.py and benchmarks/weekly_report.py: every call row of the
period loaded (transcript and analysis included) and its `analysis_json` parsed here.

Copied from salesbot_poller/reports (team_stats.figures, weekly_averages, weekly.count_identical
and plan_week's figures, digest.collect and profile_counts, bot_answers.stats and worst) as
they were before the reports were counted in SQL (issue 29). Do not "fix" it: it is what the
new path must agree with. The rendering helpers it calls (`weekly.render_team`,
`objections_block`, `digest.render_digest`, ...) are shared with the new path, unchanged.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import date, timedelta

import pydantic

from salesbot_poller.domain import MANAGER_UNKNOWN, CallAnalysis, ObjectionGroup, answered
from salesbot_poller.pipeline.context import App
from salesbot_poller.pipeline.messages import format_time, masked, pack
from salesbot_poller.reports import bot_answers, tracker_report, weekly
from salesbot_poller.reports.team_stats import CREDIT, Figures, ItemTally, ManagerFigures
from salesbot_poller.reports.topics import topic_block
from salesbot_poller.store import Call, Store


def calls_between(store: Store, start: int, end: int) -> list[Call]:
    """`Store.calls_between` as it was: whole rows."""
    query = Call.select().where(Call.event_created_at >= start, Call.event_created_at < end, Call.kind.is_null(False))
    return list(query.order_by(Call.id))


def analysed_between(store: Store, start: int, end: int) -> list[Call]:
    """`Store.analysed_between` as it was: whole rows."""
    query = Call.select().where(
        Call.event_created_at >= start, Call.event_created_at < end, Call.analysis_json.is_null(False)
    )
    return list(query.order_by(Call.event_created_at, Call.id))


def read_analysis(call: Call) -> CallAnalysis | None:
    if not call.analysis_json:
        return None
    try:
        return CallAnalysis.model_validate(json.loads(call.analysis_json))
    except (ValueError, pydantic.ValidationError):
        return None


def figures(calls: Iterable[Call]) -> Figures:
    managers: dict[str, ManagerFigures] = {}
    objections: list[str] = []
    unreadable = 0
    for call in calls:
        name = call.manager_name or MANAGER_UNKNOWN
        manager = managers.setdefault(name, ManagerFigures(name))
        if call.kind == "missed":
            manager.missed += 1
            manager.returned += call.callback_call_id is not None
            continue
        if not answered(call.duration, call.call_status):
            continue
        manager.calls += 1
        manager.talk_seconds += call.duration or 0
        analysis = read_analysis(call)
        if analysis is None:
            unreadable += bool(call.analysis_json)
            continue
        if analysis.score is not None:
            manager.score_total += analysis.score
            manager.score_count += 1
        for item in analysis.rubric:
            tally = manager.items.setdefault(item.item_id, ItemTally(item.title))
            if item.verdict in CREDIT:
                tally.credit += CREDIT[item.verdict]
                tally.scored += 1
                tally.missed += item.verdict == "missed"
        objections.extend(o.objection.strip() for o in analysis.objections if o.objection.strip())
    ordered = sorted(managers.values(), key=lambda m: (-m.calls, -m.missed, m.name))
    return Figures(ordered, unreadable)


def objections(calls: Iterable[Call]) -> list[str]:
    """Every objection of the answered calls, as `figures` collected them."""
    found: list[str] = []
    for call in calls:
        if call.kind == "missed" or not answered(call.duration, call.call_status):
            continue
        analysis = read_analysis(call)
        if analysis is not None:
            found.extend(o.objection.strip() for o in analysis.objections if o.objection.strip())
    return found


def weekly_averages(calls: Iterable[Call], week_starts: Sequence[int]) -> dict[str, list[int | None]]:
    if not week_starts:
        return {}
    end = week_starts[-1] + 7 * 24 * 3600
    scores: dict[str, list[list[int]]] = {}
    for call in calls:
        if not week_starts[0] <= call.event_created_at < end:
            continue
        analysis = read_analysis(call)
        if analysis is None or analysis.score is None:
            continue
        week = max(n for n, start in enumerate(week_starts) if start <= call.event_created_at)
        per_week = scores.setdefault(call.manager_name or MANAGER_UNKNOWN, [[] for _ in week_starts])
        per_week[week].append(analysis.score)
    return {name: [round(sum(week) / len(week)) if week else None for week in weeks] for name, weeks in scores.items()}


def _normalised(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def count_identical(found: Sequence[str]) -> list[ObjectionGroup]:
    counts = Counter(_normalised(text) for text in found if _normalised(text))
    first: dict[str, str] = {}
    for text in found:
        first.setdefault(_normalised(text), text.strip())
    return [ObjectionGroup(first[key], count) for key, count in counts.most_common()]


def chart_series(app: App, monday: date, names: Sequence[str]) -> tuple[dict[str, list[int | None]], list[str]]:
    mondays = [monday - weekly.WEEK * n for n in range(weekly.CHART_WEEKS - 1, -1, -1)]
    starts = [weekly.midnight(day, app.tz) for day in mondays]
    calls = analysed_between(app.store, starts[0], weekly.midnight(monday + weekly.WEEK, app.tz))
    averages = weekly_averages(calls, starts)
    ordered = [name for name in names if name in averages]
    ordered += sorted((n for n in averages if n not in ordered), key=lambda n: -sum(v is not None for v in averages[n]))
    return {name: averages[name] for name in ordered}, [f"{day:%d.%m}" for day in mondays]


def week_parts(app: App, monday: date, grouped: Sequence[str] | None = None) -> list[str]:
    """The weekly report's text as `plan_week` rendered it. `grouped`: what a grouper was given
    (appended to), None: no grouper (identical texts counted)."""
    start, end = weekly.midnight(monday, app.tz), weekly.midnight(monday + weekly.WEEK, app.tz)
    calls = calls_between(app.store, start, end)
    week = figures(calls)
    before = figures(calls_between(app.store, weekly.midnight(monday - weekly.WEEK, app.tz), start))
    previous = {m.name: m.average for m in before.managers}
    for manager in week.managers:
        manager.previous = previous.get(manager.name)
    found = objections(calls)
    if not found:
        groups: list[ObjectionGroup] = []
    elif app.objections is None:
        groups = count_identical(found)
    else:
        groups = app.objections.group(found).groups or count_identical(found)
    last_day = monday + timedelta(days=6)
    head = f"📈 <b>Итоги недели</b> · {monday:%d.%m} – {last_day:%d.%m.%Y}"
    trackers = tracker_report.week_block(app.store, start, end)
    topics = topic_block(app, start, end)
    blocks = [weekly.objections_block(groups, len(found)), *([topics] if topics else []), trackers]
    return weekly.render_team(head, week, blocks)


def digest_managers(app: App, start: int, end: int) -> list[ManagerFigures]:
    calls = calls_between(app.store, start, end)
    weakest: dict[str, tuple[int, str, str]] = {}
    for call in calls:
        analysis = read_analysis(call)
        if analysis is None or analysis.score is None or call.kind == "missed":
            continue
        name = call.manager_name or MANAGER_UNKNOWN
        if name not in weakest or analysis.score < weakest[name][0]:
            url = app.source.entity_url(call.entity_type, call.entity_id)
            weakest[name] = (analysis.score, call.entity_name or call.phone or f"#{call.entity_id}", url)
    managers = figures(calls).managers
    for manager in managers:
        manager.weakest_call = weakest.get(manager.name)
    return managers


def profile_counts(app: App, start: int, end: int) -> dict[str, tuple[int, int]]:
    counts: dict[str, tuple[int, int]] = {}
    for call in calls_between(app.store, start, end):
        if call.profile is None and call.skip_reason != "no profile":
            continue
        talks, missed = counts.get(call.profile or "", (0, 0))
        if call.kind == "missed":
            counts[call.profile or ""] = (talks, missed + 1)
        elif answered(call.duration, call.call_status):
            counts[call.profile or ""] = (talks + 1, missed)
    return counts


def stats_parts(app: App, days: int, now: int) -> list[str]:
    """`/stats Nd` over the whole team, as the old count over loaded rows gave it."""
    start = now - days * bot_answers.DAY
    current = figures(calls_between(app.store, start, now))
    earlier = figures(calls_between(app.store, start - days * bot_answers.DAY, start))
    before = {m.name: m.average for m in earlier.managers}
    for manager in current.managers:
        manager.previous = before.get(manager.name)
    head = f"📊 <b>Статистика за {days} дней</b> · {format_time(start, app.tz)} – {format_time(now, app.tz)}"
    topics = topic_block(app, start, now)
    return weekly.render_team(head, current, [topics] if topics else [])


def worst_parts(app: App, count: int, now: int) -> list[str]:
    hide = masked(app.config.telegram.mask_phones)
    scored = []
    for call in analysed_between(app.store, now - bot_answers.RECENT_DAYS * bot_answers.DAY, now):
        analysis = read_analysis(call)
        if analysis is not None and analysis.score is not None:
            scored.append((analysis.score, call.event_created_at, call))
    scored.sort(key=lambda entry: (entry[0], -entry[1]))
    lines = [
        f"{score}/100 · {bot_answers._head(app, call)} · {bot_answers._link(app, call, hide)} · /call {call.id}"
        for score, _, call in scored[:count]
    ]
    head = f"📉 <b>Худшие звонки за {bot_answers.RECENT_DAYS} дней</b>"
    return pack([head, "\n".join(lines) or "Оценённых звонков не было."])
