"""Cost accounting: what was sent to OpenAI, what it is estimated to cost, the daily budget.

Contract:
- `record_transcription(store, call_id, now, transcript)` stores one `Usage` row (audio
  seconds sent, tokens in/out, model). The pipeline calls it in the same transaction that
  stores the transcript, so a transcription is counted exactly once. `record_analysis`
  does the same for the analysis tokens, with the analysis.
- `cost_between(store, prices, start, end)`: each model's usage priced as `prices` says
  (`pipeline.prices`: the config's prices, else OpenAI's built in; a transcription by its
  audio minutes, the rest by tokens), with the models that have no price named rather than
  counted as $0. Prices are read at the time of reading, so a price change re-prices history
  (they are estimates, not invoices).
- Days and months are UTC. `month_bounds("2026-11")` is that month's [start, end) in Unix
  time (ValueError naming the value otherwise); `totals_between` and `month_report` sum it.
- The daily budget (`openai.daily_budget_usd` > 0) is reserved per upload, never per call:
  a note's claimed duration enters no estimate. `BudgetGate.meter(...)` gives a call's
  transcription a `CallMeter` (`domain.UploadMeter`): before each upload it reserves that
  upload's audio minutes x the model's price per minute in the store (`Store.reserve_upload`,
  atomic against every worker and process on SQLite and PostgreSQL), granted when today's
  estimate + the reservations in flight + the upload stay within the budget (or when nothing
  at all is spent or reserved today: an upload dearer than the whole budget then goes alone,
  so the overshoot is at most that one upload). Refused: `errors.BudgetReached` with the
  start of the next UTC day. After the answer the reservation becomes a `Usage` row of that
  upload (so what was paid counts on the day it was paid, and a call resumed tomorrow pays
  only its remaining uploads); a failed upload releases it.
- `BudgetGate.hold(store, prices, now)`: before a transcription starts, the start of the next
  UTC day when nothing is left today, else None. `reached` logs one WARNING per UTC day, not
  one per call, and marks the day as one that held calls back (`held_back_today`).
- `budget_warning(prices)`: what `check` warns of when a daily budget is set but the price of
  every configured model is 0, so the estimate stays $0 and the budget is never reached; None
  otherwise. (A model with no price at all is `prices.price_warning`'s.) Usage that cannot be
  priced counts $0 against the budget.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from salesbot_poller.config import OpenAIConfig
from salesbot_poller.domain import CallAnalysis, Transcript
from salesbot_poller.errors import BudgetReached
from salesbot_poller.pipeline.prices import Cost, audio_price, row_usd, token_prices
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
    cost: Cost
    calls_analysed: int

    @property
    def audio_minutes(self) -> float:
        return self.totals.audio_seconds / 60


def month_report(store: Store, prices: OpenAIConfig, start: int, end: int) -> MonthReport:
    totals = totals_between(store, start, end)
    return MonthReport(totals, cost_between(store, prices, start, end), store.analysed_calls(start, end))


def budget_spent(store: Store, prices: OpenAIConfig, now: int) -> bool:
    """Whether transcriptions wait for tomorrow: today's estimate and reservations have reached
    `openai.daily_budget_usd`, or the next upload of a call did not fit in what was left
    (never when the budget is 0)."""
    if prices.daily_budget_usd <= 0:
        return False
    return budget_used(store, prices, now) >= prices.daily_budget_usd or held_back_today(store, now)


def cost_between(store: Store, prices: OpenAIConfig, start: int, end: int | None = None) -> Cost:
    """What was recorded in [start, end) cost, per the module contract."""
    usd, unpriced = 0.0, set()
    for kind, model, seconds, tokens_in, tokens_out in store.usage_by_model(start, end):
        row = row_usd(prices, kind, model, seconds, tokens_in, tokens_out)
        if row is None:
            unpriced.add(model)
        else:
            usd += row
    return Cost(usd, tuple(sorted(unpriced)))


def budget_warning(prices: OpenAIConfig) -> str | None:
    """See the module contract."""
    speech = [prices.transcription_model] + ([prices.diarize_model] if prices.diarize_model else [])
    priced = [audio_price(prices, model) for model in speech] + list(token_prices(prices, prices.analysis_model))
    if prices.daily_budget_usd <= 0 or None in priced or any(priced):
        return None
    return (
        f"openai.daily_budget_usd is ${prices.daily_budget_usd:.2f} but audio_price_per_minute_usd and the "
        "token prices are all 0: the estimate stays $0 and the budget is never reached; set the prices, "
        "or daily_budget_usd = 0 for no budget"
    )


def next_day(now: int) -> int:
    return int((datetime.fromtimestamp(day_start(now), UTC) + timedelta(days=1)).timestamp())


def budget_used(store: Store, prices: OpenAIConfig, now: int) -> float:
    """Today's estimate (UTC) plus what the uploads in flight reserved against today."""
    today = day_start(now)
    return cost_between(store, prices, today).usd + store.held_usd(today)


class CallMeter:
    """Implements `domain.UploadMeter` for one call's transcription: each upload is reserved
    in the store (`Store.reserve_upload`) against the day of `now`; see the module contract."""

    def __init__(self, store: Store, prices: OpenAIConfig, call_id: int, now: int) -> None:
        self._store, self._prices, self._call_id, self._now = store, prices, call_id, now
        self.uploads = 0  # reserved through this meter (for the log)

    def reserve(self, seconds: float, model: str) -> int:
        prices, store = self._prices, self._store
        today = day_start(self._now)
        usd = seconds / 60 * (audio_price(prices, model) or 0.0)  # no price: the budget cannot count it
        budget = prices.daily_budget_usd
        used = 0.0

        def fits(held: float) -> bool:
            nonlocal used
            if budget <= 0:
                return True
            used = cost_between(store, prices, today).usd + held
            # An upload dearer than the whole budget goes as the day's first spend: a small
            # budget delays such a call, it never starves it.
            return used + usd <= budget or used <= 0

        with self._connection():
            ticket = store.reserve_upload(
                call_id=self._call_id, day=today, at=self._now, model=model, audio_seconds=seconds, usd=usd, fits=fits
            )
        if ticket is None:
            raise BudgetReached(
                f"the next {seconds / 60:.1f} min upload (~${usd:.2f}) would cross openai.daily_budget_usd="
                f"${budget:.2f} (${used:.2f} spent or reserved today)",
                next_day(self._now),
            )
        self.uploads += 1
        return ticket

    def spent(self, ticket: int, audio_seconds: float, input_tokens: int, output_tokens: int) -> None:
        with self._connection():
            self._store.settle_upload(ticket, audio_seconds, input_tokens, output_tokens)

    def release(self, ticket: int) -> None:
        with self._connection():
            self._store.release_upload(ticket)

    @contextmanager
    def _connection(self) -> Iterator[None]:
        """The calling thread's connection; one a channel's short-lived thread opened is
        closed again (the worker's own stays open)."""
        db = self._store.db
        fresh = db.is_closed()
        try:
            yield
        finally:
            if fresh:
                db.close()


class BudgetGate:
    """The daily budget for every worker and process sharing the store; see the module contract."""

    def hold(self, store: Store, prices: OpenAIConfig, now: int) -> int | None:
        """Before a transcription starts: the time it may start when nothing is left of
        today's budget (logged once a day); else None."""
        budget = prices.daily_budget_usd
        if budget <= 0:
            return None
        used = budget_used(store, prices, now)
        if used < budget:
            return None
        self.reached(store, prices, now, used)
        return next_day(now)

    def meter(self, store: Store, prices: OpenAIConfig, call_id: int, now: int) -> CallMeter:
        """The meter a transcription pays its uploads through. The call's holds left by a
        process that died mid-upload are counted as spent first."""
        stale = store.settle_stale_uploads(call_id)
        if stale:
            log.warning("call %d: %d upload(s) left in flight by an earlier run counted as spent", call_id, stale)
        return CallMeter(store, prices, call_id, now)

    def reached(self, store: Store, prices: OpenAIConfig, now: int, used: float | None = None) -> int:
        """A call waits for the budget: the WARNING, once a UTC day (which also tells
        `reports.budget_notice` that calls were held back today); when they may resume."""
        resume = next_day(now)
        day = datetime.fromtimestamp(day_start(now), UTC).strftime("%Y-%m-%d")
        if store.get_state(BUDGET_LOGGED_KEY) != day:
            store.set_state(BUDGET_LOGGED_KEY, day)
            spent = budget_used(store, prices, now) if used is None else used
            log.warning(
                "daily OpenAI budget reached: $%.2f of openai.daily_budget_usd=$%.2f spent or reserved today (UTC); "
                "transcriptions wait until %s UTC",
                spent,
                prices.daily_budget_usd,
                datetime.fromtimestamp(resume, UTC).strftime("%Y-%m-%d %H:%M"),
            )
        return resume


def held_back_today(store: Store, now: int) -> bool:
    """Whether the budget put a transcription off today (UTC)."""
    day = datetime.fromtimestamp(day_start(now), UTC).strftime("%Y-%m-%d")
    return store.get_state(BUDGET_LOGGED_KEY) == day


def status_lines(store: Store, prices: OpenAIConfig, now: int) -> list[str]:
    """Today's and this month's usage and estimated cost, for `status`."""
    lines = ["openai usage (UTC, estimated from the configured or OpenAI's list prices):"]
    for label, since in (("today", day_start(now)), ("this month", month_start(now))):
        t = totals_since(store, since)
        lines.append(
            f"  {label:<11} {t.audio_seconds / 60:.1f} audio min, {t.input_tokens} tokens in, "
            f"{t.output_tokens} tokens out, {cost_between(store, prices, since).text()} ({t.requests} requests)"
        )
    if prices.daily_budget_usd > 0:
        state = "reached: transcriptions wait for tomorrow" if budget_spent(store, prices, now) else "ok"
        lines.append(f"  daily budget ${prices.daily_budget_usd:.2f}: {state}")
    return lines
