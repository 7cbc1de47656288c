"""The store's failed calls and set-aside events, and `retry` putting them back.

Contract:
- `requeue` puts a failed call back at a stage, due now, with a fresh attempt count.
- `forget_unsent_render` (for `retry`) drops the rows of a call's own message Telegram
  accepted none of, so it is rendered again; a message partly accepted is reopened instead,
  so only its rest is sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from salesbot_poller.domain import Stage
from salesbot_poller.store.calls import CallRows
from salesbot_poller.store.models import Call, Delivery, SeenEvent


class Failures(CallRows):
    """Failures and retry: a mixin of `Store`."""

    def find_call(self, call_id: int) -> Call | None:
        return Call.get_or_none(Call.id == call_id)

    def failed_calls(self, stages: Iterable[Stage] = (Stage.FAILED,), limit: int | None = None) -> list[Call]:
        """Every call at one of `stages` (`failed`, by default), most recent first (the first
        `limit` of them, when given; `stage_counts` says how many there are)."""
        wanted = [stage.value for stage in stages]
        query = Call.select().where(Call.stage.in_(wanted)).order_by(Call.updated_at.desc(), Call.id.desc())
        return list(query.limit(limit) if limit is not None else query)

    def set_aside_events(self, limit: int = 5) -> tuple[int, list[SeenEvent]]:
        """How many events were set aside (malformed, or quarantined), and the latest `limit`."""
        query = SeenEvent.select().where(SeenEvent.error.is_null(False))
        latest = query.order_by(SeenEvent.seen_at.desc(), SeenEvent.event_id).limit(limit)
        return query.count(), list(latest)

    def forget_unsent_render(self, call: Call) -> None:
        """For `retry`: a call whose own message Telegram accepted none of is rendered again
        (by today's renderer: a message an older release got wrong is not resent as it was);
        its rows with nothing accepted go. A message partly accepted is reopened instead, so
        only its rest is sent."""
        own = self.find_delivery(f"call:{call.id}")
        if own is None:
            return
        if json.loads(own.sent_ids_json):
            if own.done_at is not None and own.error is not None:
                self.update_delivery(own, done_at=None, error=None, attempts=0, next_attempt_at=0)
            return
        Delivery.delete().where(Delivery.call_id == call.id, Delivery.sent_ids_json == "[]").execute()

    def requeue(self, call: Call, stage: Stage, now: int) -> None:
        """Put a failed call back at `stage`, due now, with a fresh attempt count and 24 h."""
        self.update(call, now, stage=stage, attempts=0, next_attempt_at=now, retried_at=now)
