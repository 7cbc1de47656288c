"""The store's delivery rows: the messages (and amoCRM writes) planned for a call or for none.

Contract:
- `enqueue` stores planned items once each: an item whose key is stored already is left as
  it is (exactly once).
- `update_delivery` commits at once, its error text redacted (`Delivery.error`).
- `claim_delivery` makes one lane the row's only sender, as calls are claimed (a conditional
  UPDATE: unsent, and unclaimed, claimed by the same owner, or claimed more than `lease`
  seconds ago), and reads the row again either way; `release_delivery` gives it back.
- The lanes read what is due (`pending`, `due_extras`), and what must go first
  (`older_cards_waiting`: one chat's cards keep the order of their calls; `newer_lead_write`:
  a lead's fields come from its newest call).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, cast

import peewee

from salesbot_poller.domain import Planned, Stage
from salesbot_poller.store.base import StoreBase
from salesbot_poller.store.claims import unclaimed
from salesbot_poller.store.models import Call, Delivery

IN_CHUNK = 500  # keys per IN (...): far under SQLite's variable limit

# What another sender may have changed since a row was read: read again once it is claimed.
SENDING_STATE = ("sent_ids_json", "done_at", "error", "attempts", "next_attempt_at", "payload_json", "removed_at")


class DeliveryRows(StoreBase):
    """Delivery rows: a mixin of `Store`."""

    def enqueue(self, items: Iterable[Planned], call_id: int | None, now: int) -> None:
        """Store planned items; an item whose key is stored already is left as it is."""
        for item in items:
            Delivery.insert(
                key=item.key,
                call_id=call_id,
                kind=item.kind,
                chat_id=item.to.chat_id if item.to else None,
                thread_id=item.to.thread_id if item.to else None,
                reply_to_key=item.reply_to_key,
                payload_json=json.dumps(item.payload, ensure_ascii=False),
                created_at=now,
            ).on_conflict_ignore().execute()

    def pending(self, *, call_id: int | None = None, kinds: Iterable[str] | None = None) -> list[Delivery]:
        """Deliveries not done yet, in the order they were stored."""
        query = Delivery.select().where(Delivery.done_at.is_null())
        if call_id is not None:
            query = query.where(Delivery.call_id == call_id)
        if kinds is not None:
            query = query.where(Delivery.kind.in_(list(kinds)))
        return list(query.order_by(Delivery.id))

    def stored_keys(self, keys: Sequence[str]) -> set[str]:
        """Those of `keys` stored already (by the unique key index, `IN_CHUNK` at a time)."""
        found: set[str] = set()
        for start in range(0, len(keys), IN_CHUNK):
            chunk = list(keys[start : start + IN_CHUNK])
            rows = cast(Iterable[tuple[str]], Delivery.select(Delivery.key).where(Delivery.key.in_(chunk)).tuples())
            found.update(str(row[0]) for row in rows)
        return found

    def find_delivery(self, key: str) -> Delivery | None:
        return Delivery.get_or_none(Delivery.key == key)

    def update_delivery(self, row: Delivery, **fields: Any) -> None:
        """Commit `fields` of `row` (and mirror them on the instance)."""
        fields = self._redacted(fields)
        Delivery.update(**fields).where(Delivery.id == row.id).execute()
        for name, value in fields.items():
            setattr(row, name, value)

    def claim_delivery(self, row: Delivery, owner: str, now: int, lease: int) -> bool:
        """Make `owner` the only sender of `row` (see the module contract); True when it is.
        `row` is read again either way: what another sender recorded meanwhile (its accepted
        parts, `done_at`) is what the caller then sees."""
        free = unclaimed(Delivery, now, lease) | (Delivery.claimed_by == owner)
        taken = (
            Delivery.update(claimed_by=owner, claimed_at=now)
            .where(Delivery.id == row.id, Delivery.done_at.is_null(), free)
            .execute()
        )
        fresh = Delivery.get_by_id(row.id)
        for name in (*SENDING_STATE, "claimed_by", "claimed_at"):
            setattr(row, name, getattr(fresh, name))
        return bool(taken)

    def release_delivery(self, row: Delivery, owner: str) -> None:
        """Give `row` back, if `owner` still holds it."""
        Delivery.update(claimed_by=None, claimed_at=None).where(
            Delivery.id == row.id, Delivery.claimed_by == owner
        ).execute()
        row.claimed_by = row.claimed_at = None

    def due_extras(self, now: int) -> list[Delivery]:
        """Unsent rows of calls whose own card or alert is delivered (their other destinations:
        the alert chat, the transcript, amoCRM), due by `now`, in the order they were stored."""
        call = Call.alias()
        query = (
            Delivery.select()
            .join(call, on=(Delivery.call_id == call.id))
            .where(
                Delivery.done_at.is_null(),
                Delivery.next_attempt_at <= now,
                call.stage.in_([Stage.NOTIFIED.value, Stage.MISSED_ALERTED.value]),
            )
        )
        return list(query.order_by(Delivery.id))

    def failing_deliveries(self, limit: int = 5) -> tuple[int, int, list[Delivery]]:
        """Destinations in trouble: how many rows wait for another try after a failure, how many
        were given up, and the latest `limit` of either."""
        failing = Delivery.error.is_null(False)
        # One pass over the failing rows only (a partial index: 0020_query_indexes); a
        # condition on `done_at` would walk its index over every row ever delivered.
        unsent = Delivery.done_at.is_null()
        counted = Delivery.select(unsent, peewee.fn.COUNT(Delivery.id)).where(failing).group_by(unsent).tuples()
        counts = {bool(flag): int(count) for flag, count in cast(Iterable[tuple[object, int]], counted)}
        latest = Delivery.select().where(failing).order_by(Delivery.id.desc()).limit(limit)
        return counts.get(True, 0), counts.get(False, 0), list(latest)

    def newer_lead_write(self, lead_id: int, started_at: int, call_id: int) -> bool:
        """Whether the lead `lead_id` already got its fields (`amo_fields`) from a call newer
        than (`started_at`, `call_id`): by start time, then id."""
        call = Call.alias()
        query = (
            Delivery.select(Delivery.id)
            .join(call, on=(Delivery.call_id == call.id))
            .where(
                Delivery.kind == "amo_fields",
                Delivery.sent_ids_json != "[]",
                call.entity_type == "leads",
                call.entity_id == lead_id,
                (call.event_created_at > started_at) | ((call.event_created_at == started_at) & (call.id > call_id)),
            )
        )
        return bool(query.exists())

    def older_cards_waiting(self, row: Delivery, due_by: int) -> bool:
        """Whether a card or alert of an earlier call to the same chat is rendered, unsent, and
        due by `due_by`: it goes first, so one chat's cards keep the order of their calls."""
        call = Call.alias()
        query = (
            Delivery.select(Delivery.id)
            .join(call, on=(Delivery.call_id == call.id))
            .where(
                Delivery.done_at.is_null(),
                Delivery.key.startswith("call:"),
                Delivery.kind.in_(["card", "alert"]),
                Delivery.chat_id.is_null() if row.chat_id is None else Delivery.chat_id == row.chat_id,
                Delivery.call_id < row.call_id,
                call.next_attempt_at <= due_by,
                call.stage == Stage.NOTIFYING.value,
            )
        )
        return query.exists()
