"""The trackers' lines on a card and their alert (HTML), as pure functions of the stored hits.

Contract:
- `card_lines(hits, missing)`: one line per tracker with hits, in the order of its first hit:
  "🏷 Конкурент ×2: «у конкурентов дешевле» (03:12)" (the first hit's words, cut to
  `PHRASE_CHARS`, and its time when the transcript had times); at most `LIST_ITEMS` trackers,
  the rest counted; then one line for the expected trackers not said: "⚠️ не сказано: …".
  Every value is cleaned, cut, then escaped (`messages`).
- `render_alert(ctx, hits, tz, mask)`: the alert sent at once to the call's chat on a hit of
  a tracker with `alert = true`: one line per such tracker (its first hit), then the call's
  lead/contact link, as missed-call alerts show it. Phone numbers follow `telegram.mask_phones`
  as on a card.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import tzinfo
from typing import Protocol

from salesbot_poller.config import MaskMode
from salesbot_poller.domain import CallContext
from salesbot_poller.pipeline.messages import LIST_ITEMS, _entity_line, clip, esc, format_time, masked, name_html, pack
from salesbot_poller.services.quotes import clock

PHRASE_CHARS = 90
NAME_CHARS = 60
MISSING_CHARS = 300


class ShownHit(Protocol):
    @property
    def tracker(self) -> str: ...
    @property
    def phrase(self) -> str: ...
    @property
    def at(self) -> float | int | None: ...


def _first_hits(hits: Sequence[ShownHit]) -> dict[str, tuple[ShownHit, int]]:
    """Each tracker's first hit and its number of hits, in the order of first hits."""
    found: dict[str, tuple[ShownHit, int]] = {}
    for hit in hits:
        first, count = found.get(hit.tracker, (hit, 0))
        found[hit.tracker] = (first, count + 1)
    return found


def _quote(hit: ShownHit) -> str:
    words = clip(hit.phrase, PHRASE_CHARS)
    at = f" ({clock(int(hit.at))})" if hit.at is not None else ""
    return f"«{esc(words)}»{at}" if words else at.strip()


def card_lines(hits: Sequence[ShownHit], missing: Sequence[str]) -> list[str]:
    """See the module contract."""
    lines = []
    found = list(_first_hits(hits).items())
    for name, (first, count) in found[:LIST_ITEMS]:
        times = f" ×{count}" if count > 1 else ""
        quote = _quote(first)
        lines.append(f"🏷 {esc(clip(name, NAME_CHARS))}{times}" + (f": {quote}" if quote else ""))
    if len(found) > LIST_ITEMS:
        lines.append(f"🏷 … и ещё трекеров: {len(found) - LIST_ITEMS}")
    if missing:
        lines.append(f"⚠️ не сказано: {esc(clip('; '.join(missing), MISSING_CHARS))}")
    return lines


def render_alert(
    ctx: CallContext, hits: Sequence[ShownHit], tz: tzinfo | None = None, mask: MaskMode = "cards"
) -> list[str]:
    """See the module contract: `hits` are those of the trackers that alert."""
    hide = masked(mask)
    manager = name_html(ctx.manager)
    lines = [
        f"🏷 <b>{esc(clip(name, NAME_CHARS))}</b> · {manager} · {_quote(first)}".rstrip(" ·")
        for name, (first, _) in list(_first_hits(hits).items())[:LIST_ITEMS]
    ]
    lines.append(f"{_entity_line(ctx, hide)} · {format_time(ctx.started_at, tz)}")
    return pack(["\n".join(lines)])
