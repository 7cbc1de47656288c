"""The topics block of the digest, the weekly report and `/stats`.

Contract: `topic_block(app, start, end)` is None unless a closed topic list is configured
(`analysis.topics` or a profile's `topics`): free topics are the model's words, a long tail
of one-off spellings not worth a block. With one, it counts the analysed calls of [start,
end) per topic exactly as stored (`Store.topic_totals`: the listed names and "Другое"),
most calls first, with each topic's average score; "" when no call had one.
"""

from __future__ import annotations

from salesbot_poller.pipeline.context import App
from salesbot_poller.pipeline.messages import clip, esc

TITLE = "🗂 <b>По темам</b>"


def closed_list(app: App) -> bool:
    """Whether any call may get a topic from a closed list."""
    config = app.config
    return bool(config.analysis.topics) or any(profile.topics for profile in config.profiles)


def topic_block(app: App, start: int, end: int) -> str | None:
    """See the module contract."""
    if not closed_list(app):
        return None
    totals = app.store.topic_totals(start, end)
    if not totals:
        return ""
    lines = [TITLE]
    for row in totals:
        average = f" · ⭐ {round(row.score_total / row.scored_calls)}" if row.scored_calls else ""
        lines.append(f"{esc(clip(row.topic, 60))}: {row.calls}{average}")
    return "\n".join(lines)
