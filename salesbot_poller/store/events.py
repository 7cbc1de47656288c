"""The store's record of amoCRM's call events: the window and its cursor, set-aside events.

Contract:
- `record_window` stores a window's events and advances the cursor in ONE transaction:
  the cursor never passes an event that is not durably recorded. An event that cannot be
  stored is set aside (quarantined) like a malformed one, with its redacted reason; a
  database error propagates and the whole window waits.
- An event is recorded once (`SeenEvent`); a new one creates its `Call`.
- `readmit_event` turns a set-aside event (now valid) into a call, in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import peewee

from salesbot_poller.domain import CallEvent
from salesbot_poller.logs import excerpt
from salesbot_poller.store.base import CURSOR_KEY, StoreBase
from salesbot_poller.store.models import Call, SeenEvent


class EventLog(StoreBase):
    """Seen events, set-aside events and the events cursor: a mixin of `Store`."""

    # --- events -----------------------------------------------------------------------

    def record_window(
        self,
        events: Iterable[CallEvent],
        malformed: Iterable[tuple[str, str, str | None]],
        until: int,
        now: int,
        raw_of: Callable[[CallEvent], str | None] = lambda event: None,
    ) -> tuple[int, list[tuple[str, str]]]:
        """Record a window's events, new calls and the cursor atomically.

        Returns the number of new calls and the malformed events not seen before. An event that
        cannot be stored is set aside like a malformed one, kept as `raw_of(event)`.
        """
        new_calls = 0
        new_malformed = []
        malformed = list(malformed)
        with self.db.atomic():
            for event in events:
                try:
                    with self.db.atomic():  # a savepoint: one event that cannot be stored is set aside
                        new_calls += self._record_event(event, now)
                except (peewee.OperationalError, peewee.InterfaceError):
                    raise  # the database, not the event: the whole window waits
                except Exception as exc:  # confined to this event, with its reason
                    reason = f"quarantined: could not be stored ({type(exc).__name__}: {excerpt(str(exc))})"
                    malformed.append((event.event_id, reason, raw_of(event)))
            for event_id, reason, raw in malformed:
                error = self._redact(reason)
                query = SeenEvent.insert(event_id=event_id, seen_at=now, error=error, raw_json=raw).on_conflict_ignore()
                if query.as_rowcount().execute():
                    new_malformed.append((event_id, reason))
            self.set_state(CURSOR_KEY, str(until))
        return new_calls, new_malformed

    def set_aside_event(self, event_id: str) -> SeenEvent | None:
        """A set-aside event by id (None when there is none such, or it became a call)."""
        return SeenEvent.get_or_none(SeenEvent.event_id == event_id, SeenEvent.error.is_null(False))

    def readmit_event(self, event: CallEvent, now: int, set_aside_id: str | None = None) -> Call:
        """Record a set-aside event (now valid) as a new call, in one transaction.

        `set_aside_id`: the id it was set aside under when that is not its own (a stand-in
        `unknown-…` given while its id could not be read); that row goes too. An event a later
        poll already recorded under its own id keeps its call."""
        with self.db.atomic():
            ids = list({event.event_id, set_aside_id or event.event_id})
            SeenEvent.delete().where(SeenEvent.event_id.in_(ids), SeenEvent.error.is_null(False)).execute()
            self._record_event(event, now)
        return Call.get(Call.event_id == event.event_id)

    def _record_event(self, event: CallEvent, now: int) -> int:
        """Record one event and its call; 1 if it is new."""
        inserted = (
            SeenEvent.insert(event_id=event.event_id, created_at=event.created_at, seen_at=now)
            .on_conflict_ignore()
            .as_rowcount()
            .execute()
        )
        if not inserted:
            return 0
        Call.create(
            event_id=event.event_id,
            direction=event.direction,
            entity_type=event.entity_type,
            entity_id=event.entity_id,
            note_id=event.note_id,
            event_created_at=event.created_at,
            first_seen_at=now,
            updated_at=now,
        )
        return 1

    def seen_event_ids(self, event_ids: Iterable[str]) -> set[str]:
        """Which of `event_ids` are recorded already."""
        query = SeenEvent.select(SeenEvent.event_id).where(SeenEvent.event_id.in_(list(event_ids)))
        return {str(row.event_id) for row in query}
