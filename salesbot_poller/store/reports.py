"""The store's reads for the head of sales' reports and bot commands.

A mixin of `Store` (the one object every query goes through), kept apart so `store.core`
stays readable. Each method reads; none writes.
"""

from __future__ import annotations

import peewee

from salesbot_poller.store import search
from salesbot_poller.store.models import Call

FIND_LIMIT = 10


class ReportQueries:
    db: peewee.Database

    def analysed_between(self, start: int, end: int) -> list[Call]:
        """Calls that happened in [start, end) and have a stored analysis, oldest first."""
        query = Call.select().where(
            Call.event_created_at >= start, Call.event_created_at < end, Call.analysis_json.is_null(False)
        )
        return list(query.order_by(Call.event_created_at, Call.id))

    def unreturned_missed(self, since: int) -> list[Call]:
        """Missed incoming calls since `since` that nobody has called back yet (and whose
        personal data is still there: a forgotten call is nobody's to return), oldest first."""
        query = Call.select().where(
            Call.kind == "missed",
            Call.event_created_at >= since,
            Call.callback_call_id.is_null(),
            Call.personal_removed_at.is_null(),
        )
        return list(query.order_by(Call.event_created_at, Call.id))

    def call_by_event(self, event_id: str) -> Call | None:
        return Call.get_or_none(Call.event_id == event_id)

    def find_calls(self, text: str, limit: int = FIND_LIMIT) -> list[Call]:
        """Calls whose transcript holds every word of `text`, newest first (`store.search`)."""
        ids = search.matching_ids(self.db, search.query_words(text), limit)
        found = {call.id: call for call in Call.select().where(Call.id.in_(ids))} if ids else {}
        return [found[call_id] for call_id in ids if call_id in found]
