"""The store's work queue: which calls are due, and claiming one for a worker.

Contract:
- A claim is marked with its owner (`owner()`: this process and thread) and the time it was
  taken or last renewed (`claimed_at`).
- `next_due_at` tells when the first put-off call comes due (an idle worker waits that long
  at most).
- `claim_next` claims the oldest due call of the given stages that is unclaimed, or whose
  claim is older than `lease` seconds (its owner died or lost the database: taken back, with
  a warning), with a conditional UPDATE (PostgreSQL: of a row picked with FOR UPDATE SKIP
  LOCKED): no two threads or processes ever work the same call at once.
- `renew` moves a held claim's time on (between stages, so a long call is not taken back);
  False when the claim is no longer the owner's. `release` gives a call back (only the
  owner's claim, when the owner is named).
- `release_owner` gives back every claim of one owner, calls and delivery rows (a worker
  that met a database error does so once the database answers: whatever it held, or may
  have taken in a claim whose answer was lost); `release_all_claims` (at start) gives back
  those of a process that died.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from contextlib import nullcontext

import peewee

from salesbot_poller.domain import TERMINAL_STAGES, Stage
from salesbot_poller.store.base import StoreBase
from salesbot_poller.store.models import Call, Delivery

log = logging.getLogger(__name__)


def owner() -> str:
    """This thread's claim mark: the process and the thread."""
    return f"{os.getpid()}:{threading.current_thread().name}"


def unclaimed(model: type[Call] | type[Delivery], now: int, lease: int | None) -> peewee.Expression:
    """Rows of `model` free to claim at `now`: unclaimed, or claimed more than `lease` s ago."""
    free = model.claimed_by.is_null()
    if lease is not None:
        free = free | (model.claimed_at <= now - lease)
    return free


def oldest_first() -> peewee.Node:
    """ORDER BY id for the queues, as an expression (`id + 0`, the same order): ordered by
    the column itself, SQLite with statistics (ANALYZE) walks the whole table in id order
    rather than the index of the due calls, for it takes a queue's stages (a few calls in
    life) for as many calls as the finished ones (`tests/test_query_plans.py`)."""
    return Call.id + 0


class Claims(StoreBase):
    """Due calls and their claims: a mixin of `Store`."""

    def due_calls(self, now: int, stages: Iterable[Stage] | None = None, kind: str | None = None) -> list[Call]:
        """Unfinished calls whose next attempt is due, oldest first (of `kind`, when given)."""
        wanted = [s.value for s in (stages or [s for s in Stage if s not in TERMINAL_STAGES])]
        query = Call.select().where(Call.stage.in_(wanted), Call.next_attempt_at <= now)
        if kind is not None:
            query = query.where(Call.kind == kind)
        return list(query.order_by(oldest_first()))

    def count_put_off(self, now: int, stages: Iterable[Stage]) -> int:
        """Answered calls at `stages` whose next attempt is after `now` (put off: the daily
        budget, a backoff)."""
        wanted = [s.value for s in stages]
        query = Call.select().where(Call.stage.in_(wanted), Call.kind == "conversation", Call.next_attempt_at > now)
        return int(query.count())

    def next_due_at(self, now: int, stages: Iterable[Stage], kind: str) -> int | None:
        """When the first call of `stages` and `kind` put off past `now` (a backoff, the daily
        budget) comes due; None when there is none. Read by the index on `next_attempt_at`."""
        wanted = [s.value for s in stages]
        first = (
            Call.select(Call.next_attempt_at)
            .where(Call.next_attempt_at > now, Call.stage.in_(wanted), Call.kind == kind)
            .order_by(Call.next_attempt_at)
            .limit(1)
            .first()
        )
        return None if first is None else int(first.next_attempt_at)

    def claim_next(
        self,
        worker: str,
        now: int,
        stages: Iterable[Stage],
        kind: str,
        exclude: Iterable[int] = (),
        lease: int | None = None,
    ) -> Call | None:
        """Claim the oldest due call of `stages` and `kind` (not in `exclude`) that is
        unclaimed, or claimed more than `lease` seconds before `now`, for `worker`; None if
        there is none.

        The claim is a conditional UPDATE (the row must still be claimable and due), so of
        two threads or processes racing for a call exactly one gets it. On PostgreSQL the row
        is picked with FOR UPDATE SKIP LOCKED in the same transaction: racing workers take
        different calls at once instead of queueing behind one row lock.
        """
        wanted = [s.value for s in stages]
        claimable = (
            Call.stage.in_(wanted),
            Call.kind == kind,
            Call.next_attempt_at <= now,
            unclaimed(Call, now, lease),
            Call.id.not_in(list(exclude)),
        )
        postgres = isinstance(self.db, peewee.PostgresqlDatabase)
        while True:
            with self.db.atomic() if postgres else nullcontext():  # PostgreSQL: the row stays locked
                query = Call.select(Call.id, Call.claimed_by, Call.claimed_at).where(*claimable)
                query = query.order_by(oldest_first())
                candidate = (query.for_update(skip_locked=True) if postgres else query).limit(1).first()
                if candidate is None:
                    return None
                taken = Call.update(claimed_by=worker, claimed_at=now).where(Call.id == candidate.id, *claimable)
                if not taken.execute():
                    continue  # another process took it between the two statements (SQLite)
            if candidate.claimed_by is not None:
                log.warning(
                    "call %d: its claim by %s, not renewed since %d, is taken back (poller.claim_lease_seconds)",
                    candidate.id,
                    candidate.claimed_by,
                    candidate.claimed_at,
                )
            return Call.get_by_id(candidate.id)

    def renew(self, call: Call, worker: str, now: int) -> bool:
        """Move `worker`'s claim of `call` to `now`; False when it is not `worker`'s any more
        (taken back after the lease): the caller must leave the call alone."""
        held = Call.update(claimed_at=now).where(Call.id == call.id, Call.claimed_by == worker).execute()
        if held:
            call.claimed_at = now
        return bool(held)

    def release(self, call: Call, worker: str | None = None) -> None:
        """Give a claimed call back (its stage and next attempt say what comes next); with
        `worker`, only that worker's claim (another may hold the call since the lease ran out)."""
        query = Call.update(claimed_by=None, claimed_at=None).where(Call.id == call.id)
        if worker is not None:
            query = query.where(Call.claimed_by == worker)
        query.execute()
        call.claimed_by = call.claimed_at = None

    def release_owner(self, worker: str) -> int:
        """Give back every claim of `worker`, calls and delivery rows; how many there were."""
        with self.db.atomic():
            calls = Call.update(claimed_by=None, claimed_at=None).where(Call.claimed_by == worker).execute()
            rows = Delivery.update(claimed_by=None, claimed_at=None).where(Delivery.claimed_by == worker).execute()
        return int(calls) + int(rows)

    def release_all_claims(self) -> int:
        """At start: claims left by a process that died (one process works a database at a
        time), of calls and of delivery rows; how many calls there were."""
        with self.db.atomic():
            Delivery.update(claimed_by=None, claimed_at=None).where(Delivery.claimed_by.is_null(False)).execute()
            return int(Call.update(claimed_by=None, claimed_at=None).where(Call.claimed_by.is_null(False)).execute())
