"""Cost accounting: what was sent to OpenAI, what it is estimated to cost, the daily budget.

Contract:
- `record_transcription(store, call_id, now, transcript)` stores one `Usage` row (audio
  seconds sent, tokens in/out, model). The pipeline calls it in the same transaction that
  stores the transcript, so a transcription is counted exactly once. `record_analysis`
  does the same for the analysis tokens, with the analysis.
- `estimate_usd(totals, prices)`: audio minutes x `audio_price_per_minute_usd` + tokens x
  the per-million token prices. Prices come from the config at the time of reading, so a
  price change re-prices history (they are estimates, not invoices).
- Days and months are UTC. `month_bounds("2026-11")` is that month's [start, end) in Unix
  time (ValueError naming the value otherwise); `totals_between` and `month_report` sum it.
- `BudgetGate.hold(store, prices, call_id, estimate, now)`: with `openai.daily_budget_usd` > 0
  and today's estimate, plus what the transcriptions in flight are expected to cost, at or
  over it, returns the start of the next UTC day (when new transcriptions may start again);
  else None, and the call's estimate is reserved until `release`. Thread-safe: however many
  workers, the budget is overshot by at most one call, as with one. It logs one WARNING per
  day, not one per call.
- `budget_warning(prices)`: what `check` warns of when a daily budget is set but every price
  is 0, so the estimate stays $0 and the budget is never reached; None otherwise.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from salesbot_poller.config import OpenAIConfig
from salesbot_poller.domain import CallAnalysis, Transcript
from salesbot_poller.store import Store

log = logging.getLogger(__name__)

BUDGET_LOGGED_KEY = "budget_hold_logged_day"


@dataclass(frozen=True)
class Totals:
    requests: int = 0
    audio_seconds: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0


def record_transcription(store: Store, call_id: int, now: int, transcript: Transcript) -> None:
    store.add_usage(
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
        store.add_usage(
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


def totals_since(store: Store, since: int) -> Totals:
    return Totals(*store.usage_since(since))


def totals_between(store: Store, start: int, end: int) -> Totals:
    return Totals(*store.usage_since(start, end))


_MONTH = re.compile(r"(\d{4})-(\d{2})")


def month_bounds(text: str) -> tuple[int, int]:
    """The UTC month `text` ("2026-11") as [start, end) Unix times."""
    match = _MONTH.fullmatch(text.strip())
    if not match or not 1 <= int(match[2]) <= 12 or not 1970 <= int(match[1]) <= 9998:
        raise ValueError(f"{text!r} is not a month (YYYY-MM, e.g. 2026-11)")
    year, month = int(match[1]), int(match[2])
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp()), int(end.timestamp())


@dataclass(frozen=True)
class MonthReport:
    """One month of one instance, for re-billing: what was sent, its estimated cost, and how
    many calls were analysed (their analysis recorded in the month)."""

    totals: Totals
    usd: float
    calls_analysed: int

    @property
    def audio_minutes(self) -> float:
        return self.totals.audio_seconds / 60


def month_report(store: Store, prices: OpenAIConfig, start: int, end: int) -> MonthReport:
    totals = totals_between(store, start, end)
    return MonthReport(totals, estimate_usd(totals, prices), store.analysed_calls(start, end))


def budget_spent(store: Store, prices: OpenAIConfig, now: int) -> bool:
    """Whether today's estimate has reached `openai.daily_budget_usd` (never when it is 0)."""
    if prices.daily_budget_usd <= 0:
        return False
    return estimate_usd(totals_since(store, day_start(now)), prices) >= prices.daily_budget_usd


def estimate_usd(totals: Totals, prices: OpenAIConfig) -> float:
    return (
        totals.audio_seconds / 60 * prices.audio_price_per_minute_usd
        + totals.input_tokens / 1e6 * prices.input_token_price_per_million_usd
        + totals.output_tokens / 1e6 * prices.output_token_price_per_million_usd
    )


def budget_warning(prices: OpenAIConfig) -> str | None:
    """See the module contract."""
    priced = (
        prices.audio_price_per_minute_usd,
        prices.input_token_price_per_million_usd,
        prices.output_token_price_per_million_usd,
    )
    if prices.daily_budget_usd <= 0 or any(priced):
        return None
    return (
        f"openai.daily_budget_usd is ${prices.daily_budget_usd:.2f} but audio_price_per_minute_usd and the "
        "token prices are all 0: the estimate stays $0 and the budget is never reached; set the prices, "
        "or daily_budget_usd = 0 for no budget"
    )


def estimate_call_usd(duration: int | None, prices: OpenAIConfig) -> float:
    """What transcribing a call of `duration` seconds is expected to cost (one channel)."""
    return (duration or 0) / 60 * prices.audio_price_per_minute_usd


class BudgetGate:
    """The daily budget for every worker of the process; see the module contract."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reserved: dict[int, float] = {}

    def hold(self, store: Store, prices: OpenAIConfig, call_id: int, estimate: float, now: int) -> int | None:
        """When the transcription of `call_id` must wait: the time it may resume; else None."""
        budget = prices.daily_budget_usd
        if budget <= 0:
            return None
        with self._lock:
            today = day_start(now)
            spent = estimate_usd(totals_since(store, today), prices)
            in_flight = sum(usd for other, usd in self._reserved.items() if other != call_id)
            if spent + in_flight < budget:
                self._reserved[call_id] = estimate
                return None
        resume = int((datetime.fromtimestamp(today, UTC) + timedelta(days=1)).timestamp())
        day = datetime.fromtimestamp(today, UTC).strftime("%Y-%m-%d")
        if store.get_state(BUDGET_LOGGED_KEY) != day:
            store.set_state(BUDGET_LOGGED_KEY, day)
            log.warning(
                "daily OpenAI budget reached: $%.2f of openai.daily_budget_usd=$%.2f spent today (UTC)%s; "
                "new transcriptions wait until %s UTC",
                spent,
                budget,
                f", ${in_flight:.2f} more in flight" if in_flight else "",
                datetime.fromtimestamp(resume, UTC).strftime("%Y-%m-%d %H:%M"),
            )
        return resume

    def release(self, call_id: int) -> None:
        """The transcription of `call_id` is recorded (or failed): its reservation ends."""
        with self._lock:
            self._reserved.pop(call_id, None)


def status_lines(store: Store, prices: OpenAIConfig, now: int) -> list[str]:
    """Today's and this month's usage and estimated cost, for `status`."""
    lines = ["openai usage (UTC, estimated from the configured prices):"]
    for label, since in (("today", day_start(now)), ("this month", month_start(now))):
        t = totals_since(store, since)
        lines.append(
            f"  {label:<11} {t.audio_seconds / 60:.1f} audio min, {t.input_tokens} tokens in, "
            f"{t.output_tokens} tokens out, ${estimate_usd(t, prices):.2f} ({t.requests} requests)"
        )
    if prices.daily_budget_usd > 0:
        spent = estimate_usd(totals_since(store, day_start(now)), prices)
        state = "reached: new transcriptions wait for tomorrow" if spent >= prices.daily_budget_usd else "ok"
        lines.append(f"  daily budget ${prices.daily_budget_usd:.2f}: {state}")
    return lines
