"""The store's usage rows: what the calls cost (requests, audio, tokens), and counts of a
period for the budget and the reports.

Contract:
- `add_usage` records one paid request; the sums and counts read them, never write.
"""

from __future__ import annotations

from typing import Any, cast

import peewee

from salesbot_poller.domain import Stage
from salesbot_poller.store.models import Call, Usage


class UsageQueries:
    """Usage rows and the counts of a period: a mixin of `Store`."""

    def add_usage(self, **fields: Any) -> None:
        Usage.create(**fields)

    def usage_since(self, since: int, until: int | None = None) -> tuple[int, float, int, int]:
        """Requests, audio seconds, input and output tokens recorded since `since` (and before
        `until`, when given)."""
        query = Usage.select(
            peewee.fn.COUNT(Usage.id),
            peewee.fn.COALESCE(peewee.fn.SUM(Usage.audio_seconds), 0),
            peewee.fn.COALESCE(peewee.fn.SUM(Usage.input_tokens), 0),
            peewee.fn.COALESCE(peewee.fn.SUM(Usage.output_tokens), 0),
        ).where(Usage.at >= since)
        if until is not None:
            query = query.where(Usage.at < until)
        row = cast(tuple[int, float, int, int], query.tuples().get())  # a tuple, not a Usage
        return int(row[0]), float(row[1]), int(row[2]), int(row[3])

    def usage_by_model(self, since: int, until: int | None = None) -> list[tuple[str, str, float, int, int]]:
        """(kind, model, audio seconds, input tokens, output tokens) summed per kind and model
        recorded since `since` (and before `until`, when given): what a price applies to."""
        query = Usage.select(
            Usage.kind,
            Usage.model,
            peewee.fn.COALESCE(peewee.fn.SUM(Usage.audio_seconds), 0),
            peewee.fn.COALESCE(peewee.fn.SUM(Usage.input_tokens), 0),
            peewee.fn.COALESCE(peewee.fn.SUM(Usage.output_tokens), 0),
        ).where(Usage.at >= since)
        if until is not None:
            query = query.where(Usage.at < until)
        rows = cast(
            list[tuple[str, str, float, int, int]],  # tuples, not Usage rows
            list(query.group_by(Usage.kind, Usage.model).order_by(Usage.kind, Usage.model).tuples()),
        )
        return [(str(k), str(m), float(s), int(i), int(o)) for k, m, s, i, o in rows]

    def analysed_calls(self, since: int, until: int) -> int:
        """Calls whose analysis was paid for in [since, until) (its usage row's time)."""
        query = Usage.select(peewee.fn.COUNT(peewee.fn.DISTINCT(Usage.call_id))).where(
            Usage.kind == "analysis", Usage.at >= since, Usage.at < until
        )
        return int(query.scalar() or 0)

    def missed_alerted_since(self, since: int) -> int:
        """Missed calls that happened since `since` and whose alert went out (alone or in a
        storm summary)."""
        query = Call.select().where(
            Call.kind == "missed", Call.stage == Stage.MISSED_ALERTED.value, Call.event_created_at >= since
        )
        return int(query.count())
