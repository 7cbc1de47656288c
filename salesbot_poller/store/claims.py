"""The store's work queue: which calls are due, and claiming one for a worker.

Contract:
- `claim_next` claims the oldest due call of the given stages with one conditional UPDATE
  (PostgreSQL: one UPDATE of a row picked with FOR UPDATE SKIP LOCKED): no two threads or
  processes ever work the same call. `release` gives it back; `release_all_claims` (at
  start) gives back those of a process that died.
"""

from __future__ import annotations

from collections.abc import Iterable

import peewee

from salesbot_poller.domain import TERMINAL_STAGES, Stage
from salesbot_poller.store.base import StoreBase
from salesbot_poller.store.models import Call


class Claims(StoreBase):
    """Due calls and their claims: a mixin of `Store`."""

    def due_calls(self, now: int, stages: Iterable[Stage] | None = None, kind: str | None = None) -> list[Call]:
        """Unfinished calls whose next attempt is due, oldest first (of `kind`, when given)."""
        wanted = [s.value for s in (stages or [s for s in Stage if s not in TERMINAL_STAGES])]
        query = Call.select().where(Call.stage.in_(wanted), Call.next_attempt_at <= now)
        if kind is not None:
            query = query.where(Call.kind == kind)
        return list(query.order_by(Call.id))

    def count_put_off(self, now: int, stages: Iterable[Stage]) -> int:
        """Answered calls at `stages` whose next attempt is after `now` (put off: the daily
        budget, a backoff)."""
        wanted = [s.value for s in stages]
        query = Call.select().where(Call.stage.in_(wanted), Call.kind == "conversation", Call.next_attempt_at > now)
        return int(query.count())

    def claim_next(
        self, worker: str, now: int, stages: Iterable[Stage], kind: str, exclude: Iterable[int] = ()
    ) -> Call | None:
        """Claim the oldest due unclaimed call of `stages` and `kind` (not in `exclude`) for
        `worker`; None if there is none.

        The claim is one conditional UPDATE (the row must still be unclaimed and due), so of
        two threads or processes racing for a call exactly one gets it. On PostgreSQL the row
        is picked with FOR UPDATE SKIP LOCKED in that same UPDATE: racing workers take
        different calls at once instead of queueing behind one row lock.
        """
        wanted = [s.value for s in stages]
        claimable = (
            Call.stage.in_(wanted),
            Call.kind == kind,
            Call.next_attempt_at <= now,
            Call.claimed_by.is_null(),
            Call.id.not_in(list(exclude)),
        )
        if isinstance(self.db, peewee.PostgresqlDatabase):
            oldest = Call.select(Call.id).where(*claimable).order_by(Call.id).limit(1).for_update(skip_locked=True)
            claimed = Call.update(claimed_by=worker, claimed_at=now).where(Call.id == oldest, *claimable)
            ids = [int(row[0]) for row in claimed.returning(Call.id).tuples().execute()]
            return Call.get_by_id(ids[0]) if ids else None
        while True:
            candidate = Call.select(Call.id).where(*claimable).order_by(Call.id).limit(1).first()
            if candidate is None:
                return None
            taken = Call.update(claimed_by=worker, claimed_at=now).where(Call.id == candidate.id, *claimable).execute()
            if taken:
                return Call.get_by_id(candidate.id)

    def release(self, call: Call) -> None:
        """Give a claimed call back (its stage and next attempt say what comes next)."""
        Call.update(claimed_by=None, claimed_at=None).where(Call.id == call.id).execute()
        call.claimed_by = call.claimed_at = None

    def release_all_claims(self) -> int:
        """At start: claims left by a process that died (one process works a database at a time)."""
        return int(Call.update(claimed_by=None, claimed_at=None).where(Call.claimed_by.is_null(False)).execute())
