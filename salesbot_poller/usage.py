"""Cost accounting: what was sent to OpenAI, what it is estimated to cost, the daily budget.

Contract:
- `record_transcription(store, call_id, now, transcript)` stores one `Usage` row (audio
  seconds sent, tokens in/out, model). The pipeline calls it in the same transaction that
  stores the transcript, so a transcription is counted exactly once. `record_analysis`
  does the same for the analysis tokens, with the analysis.
- `estimate_usd(totals, prices)`: audio minutes x `audio_price_per_minute_usd` + tokens x
  the per-million token prices. Prices come from the config at the time of reading, so a
  price change re-prices history (they are estimates, not invoices).
- Days and months are UTC.
- `budget_hold(store, config, now)`: with `openai.daily_budget_usd` > 0 and today's estimate
  at or over it, returns the start of the next UTC day (when new transcriptions may start
  again); else None. It logs one WARNING per day, not one per call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

import peewee

from salesbot_poller.config import OpenAIConfig
from salesbot_poller.domain import CallAnalysis, Transcript
from salesbot_poller.store import Store, Usage

log = logging.getLogger(__name__)

BUDGET_LOGGED_KEY = "budget_hold_logged_day"


@dataclass(frozen=True)
class Totals:
    requests: int = 0
    audio_seconds: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0


def record_transcription(store: Store, call_id: int, now: int, transcript: Transcript) -> None:
    Usage.create(
        call_id=call_id,
        at=now,
        kind="transcription",
        model=transcript.model or "?",
        audio_seconds=transcript.audio_seconds,
        input_tokens=transcript.input_tokens,
        output_tokens=transcript.output_tokens,
    )


def record_analysis(store: Store, call_id: int, now: int, analysis: CallAnalysis) -> None:
    """One `Usage` row for the tokens of an analysis (nothing when the analyser reported none)."""
    if analysis.usage is not None:
        Usage.create(
            call_id=call_id,
            at=now,
            kind="analysis",
            model=analysis.usage.model,
            input_tokens=analysis.usage.input_tokens,
            output_tokens=analysis.usage.output_tokens,
        )


def day_start(now: int) -> int:
    moment = datetime.fromtimestamp(now, UTC)
    return int(moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp())


def month_start(now: int) -> int:
    moment = datetime.fromtimestamp(now, UTC)
    return int(moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp())


def totals_since(since: int) -> Totals:
    query = (
        Usage.select(
            peewee.fn.COUNT(Usage.id),
            peewee.fn.COALESCE(peewee.fn.SUM(Usage.audio_seconds), 0),
            peewee.fn.COALESCE(peewee.fn.SUM(Usage.input_tokens), 0),
            peewee.fn.COALESCE(peewee.fn.SUM(Usage.output_tokens), 0),
        )
        .where(Usage.at >= since)
        .tuples()
    )
    row = cast(tuple[int, float, int, int], query.get())  # .tuples(): a tuple, not a Usage
    return Totals(int(row[0]), float(row[1]), int(row[2]), int(row[3]))


def estimate_usd(totals: Totals, prices: OpenAIConfig) -> float:
    return (
        totals.audio_seconds / 60 * prices.audio_price_per_minute_usd
        + totals.input_tokens / 1e6 * prices.input_token_price_per_million_usd
        + totals.output_tokens / 1e6 * prices.output_token_price_per_million_usd
    )


def budget_hold(store: Store, prices: OpenAIConfig, now: int) -> int | None:
    """When new transcriptions must wait for the budget: the time they may resume; else None."""
    budget = prices.daily_budget_usd
    if budget <= 0:
        return None
    today = day_start(now)
    spent = estimate_usd(totals_since(today), prices)
    if spent < budget:
        return None
    resume = int((datetime.fromtimestamp(today, UTC) + timedelta(days=1)).timestamp())
    day = datetime.fromtimestamp(today, UTC).strftime("%Y-%m-%d")
    if store.get_state(BUDGET_LOGGED_KEY) != day:
        store.set_state(BUDGET_LOGGED_KEY, day)
        log.warning(
            "daily OpenAI budget reached: $%.2f of openai.daily_budget_usd=$%.2f spent today (UTC); "
            "new transcriptions wait until %s UTC",
            spent,
            budget,
            datetime.fromtimestamp(resume, UTC).strftime("%Y-%m-%d %H:%M"),
        )
    return resume


def status_lines(prices: OpenAIConfig, now: int) -> list[str]:
    """Today's and this month's usage and estimated cost, for `status`."""
    lines = ["openai usage (UTC, estimated from the configured prices):"]
    for label, since in (("today", day_start(now)), ("this month", month_start(now))):
        t = totals_since(since)
        lines.append(
            f"  {label:<11} {t.audio_seconds / 60:.1f} audio min, {t.input_tokens} tokens in, "
            f"{t.output_tokens} tokens out, ${estimate_usd(t, prices):.2f} ({t.requests} requests)"
        )
    if prices.daily_budget_usd > 0:
        spent = estimate_usd(totals_since(day_start(now)), prices)
        state = "reached: new transcriptions wait for tomorrow" if spent >= prices.daily_budget_usd else "ok"
        lines.append(f"  daily budget ${prices.daily_budget_usd:.2f}: {state}")
    return lines
