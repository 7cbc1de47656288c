"""The daily digest for the head of sales, at `telegram.digest_time` in the account's zone.

Contract of `run(app, cycle)` (once per cycle):
- Due when the local time (`amocrm.timezone`) has passed today's digest time and today's
  digest (key `digest:<date>`) is not stored yet; a process started later that day still
  sends it, a day missed entirely is not sent afterwards.
- It covers the 24 hours before today's digest time, per manager: answered calls, talk time,
  average score, missed incoming calls and how many of them were returned, and a link to the
  weakest call (lowest score) in amoCRM. It goes to the default chat (`telegram.chat_id`).
  With `[[profiles]]`, a last block counts the calls per profile (analysed, missed, skipped
  as not matching any). With a closed topic list, the calls per topic (`reports.topics`).
- A report like the card: the weakest call's name (its number when the card has no name)
  masks its number like the card does (`telegram.mask_phones`, `messages.masked`).
- Every figure is counted by the database (`team_stats.figures_in_store`,
  `Store.weakest_calls`, `Store.profile_totals`): no call row, transcript nor stored
  analysis of the day is loaded (issue 29).
- Stored before sending and each part's acceptance recorded (`delivery`): sent once per day.
  In a dry run it is printed instead (once per process), and nothing is recorded.
"""

from __future__ import annotations

import html
from datetime import date, datetime, time, timedelta, tzinfo

from salesbot_poller.config import MaskMode
from salesbot_poller.domain import MANAGER_UNKNOWN, Planned, local_time
from salesbot_poller.pipeline.context import App, Cycle
from salesbot_poller.pipeline.delivery import send_scheduled
from salesbot_poller.pipeline.messages import clean, format_duration, format_time, masked, name_html, pack
from salesbot_poller.reports.team_stats import ManagerFigures, figures_in_store
from salesbot_poller.reports.topics import topic_block

KIND = "digest"


def due_day(digest_time: str, now: int, tz: tzinfo | None) -> tuple[date, int] | None:
    """Today's date and the digest moment (unix) once it has passed; else None."""
    local = local_time(now, tz)
    moment = datetime.combine(local.date(), time.fromisoformat(digest_time), local.tzinfo)
    return (local.date(), int(moment.timestamp())) if local >= moment else None


def collect(app: App, start: int, end: int) -> list[ManagerFigures]:
    """Per manager figures for calls made in [start, end), busiest first: the weekly report's
    (`team_stats.figures_in_store`), with each manager's weakest call (`weakest_call`: the
    lowest score, the earliest call on a tie)."""
    weakest: dict[str, tuple[tuple[int, int], tuple[int, str, str]]] = {}  # name -> (score, id), shown
    for call in app.store.weakest_calls(start, end):
        name = call.manager or MANAGER_UNKNOWN  # None and "" are one manager
        if name in weakest and weakest[name][0] <= (call.score, call.call_id):
            continue
        url = app.source.entity_url(call.entity_type, call.entity_id)
        shown = (call.score, call.entity_name or call.phone or f"#{call.entity_id}", url)
        weakest[name] = ((call.score, call.call_id), shown)
    managers = figures_in_store(app.store, start, end).managers
    for manager in managers:
        found = weakest.get(manager.name)
        manager.weakest_call = found[1] if found else None
    return managers


def profile_counts(app: App, start: int, end: int) -> dict[str, tuple[int, int]]:
    """Per profile name ("" for the calls no profile matched): conversations, missed calls;
    a profile with neither is left out."""
    counts: dict[str, tuple[int, int]] = {}
    for profile, talks, missed in app.store.profile_totals(start, end):
        before = counts.get(profile or "", (0, 0))
        counts[profile or ""] = (before[0] + talks, before[1] + missed)
    return {name: count for name, count in counts.items() if count != (0, 0)}


def _profile_block(counts: dict[str, tuple[int, int]]) -> str:
    lines = ["📋 <b>По профилям</b>"]
    for name, (talks, missed) in sorted(counts.items(), key=lambda item: (not item[0], item[0])):
        title = f"«{html.escape(clean(name))}»" if name else "без профиля (не разбирались)"
        lines.append(f"{title}: разговоров {talks}, пропущено {missed}")
    return "\n".join(lines)


def render_digest(
    days: list[ManagerFigures],
    start: int,
    end: int,
    tz: tzinfo | None,
    mask: MaskMode = "cards",
    profiles: dict[str, tuple[int, int]] | None = None,
    topics: str | None = None,
) -> list[str]:
    """The digest message: a header, then one block per manager, then the profiles' counts,
    then `topics` (`reports.topics.topic_block`) when not empty."""
    hide = masked(mask)
    blocks = [f"📊 <b>Сводка за сутки</b> · {format_time(start, tz)} – {format_time(end, tz)}"]
    if not days:
        blocks.append("Звонков не было.")
    for day in days:
        average = "—" if day.average is None else str(day.average)
        lines = [
            f"👤 <b>{name_html(day.name)}</b>",
            f"📞 звонков {day.calls} · 🕒 разговор {format_duration(day.talk_seconds)} · ⭐ средняя {average}",
            f"🔴 пропущено {day.missed}, перезвонили {day.returned}",
        ]
        if day.weakest_call:
            score, name, url = day.weakest_call
            link = f'<a href="{html.escape(clean(url), quote=True)}">{name_html(name, hide)}</a>'
            lines.append(f"📉 Слабый звонок: {link} — {score}/100")
        blocks.append("\n".join(lines))
    if profiles:
        blocks.append(_profile_block(profiles))
    if topics:
        blocks.append(topics)
    return pack(blocks)


def run(app: App, cycle: Cycle) -> None:
    """See the module contract."""
    if not app.config.telegram.digest_time:
        return
    due = due_day(app.config.telegram.digest_time, cycle.now, app.tz)
    if due is None:
        return
    day, end = due

    def plan() -> list[Planned]:
        start = int((local_time(end, app.tz) - timedelta(days=1)).timestamp())
        counts = profile_counts(app, start, end) if app.config.profiles else None
        topics = topic_block(app, start, end)
        parts = render_digest(
            collect(app, start, end), start, end, app.tz, app.config.telegram.mask_phones, counts, topics
        )
        return [Planned(f"{KIND}:{day.isoformat()}", KIND, None, {"parts": parts})]

    send_scheduled(app, cycle, f"{KIND}:{day.isoformat()}", KIND, plan)
