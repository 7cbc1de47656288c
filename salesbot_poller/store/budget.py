"""The daily budget's reservations: one `UploadHold` row per transcription upload in flight,
so every worker thread and every process sharing the database sees the others' uploads.

Contract:
- `reserve_upload(..., fits)` is atomic against every other reservation: in one transaction
  it takes the budget's lock (an upsert of one `State` row: PostgreSQL holds that row's lock
  until the commit, SQLite's IMMEDIATE transaction holds the database's write lock), then
  asks `fits(held_usd)` with the day's reservations as they are now (the caller adds what is
  already recorded as `Usage`, read in the same transaction), and inserts the hold only when
  it fits. Returns the hold's id, or None (nothing written but the lock row).
- `settle_upload(id, ...)` turns a hold into one `Usage` row (kind "transcription", at the
  hold's time, so it counts against the day it was reserved for) in one transaction;
  `release_upload(id)` deletes it (the upload failed: nothing was paid).
- `settle_stale_uploads(call_id)`: holds a call left behind (the process died while an
  upload was in flight) are counted as spent: OpenAI may have billed them.
"""

from __future__ import annotations

from collections.abc import Callable

import peewee

from salesbot_poller.store.base import StoreBase
from salesbot_poller.store.models import State, UploadHold, Usage

LOCK_KEY = "budget_lock"


class BudgetLedger(StoreBase):
    """Reservations against the daily budget: a mixin of `Store`."""

    def reserve_upload(
        self,
        *,
        call_id: int,
        day: int,
        at: int,
        model: str,
        audio_seconds: float,
        usd: float,
        fits: Callable[[float], bool],
    ) -> int | None:
        """A hold for one upload, or None when `fits` refuses it (see the module contract)."""
        with self.db.atomic():
            # The lock: every reservation writes this row first, so two never read the sums
            # at the same time (a conditional INSERT alone would race on PostgreSQL).
            State.insert(key=LOCK_KEY, value=str(at)).on_conflict(
                conflict_target=[State.key], update={State.value: str(at)}
            ).execute()
            if not fits(self.held_usd(day)):
                return None
            hold = UploadHold.create(call_id=call_id, day=day, at=at, model=model, audio_seconds=audio_seconds, usd=usd)
            return int(hold.id)

    def held_usd(self, day: int) -> float:
        """What the uploads in flight reserved against `day`."""
        total = UploadHold.select(peewee.fn.COALESCE(peewee.fn.SUM(UploadHold.usd), 0)).where(UploadHold.day == day)
        return float(total.scalar() or 0.0)

    def settle_upload(self, hold_id: int, audio_seconds: float, input_tokens: int, output_tokens: int) -> None:
        with self.db.atomic():
            hold = UploadHold.get_or_none(UploadHold.id == hold_id)
            if hold is None:  # already settled (a stale hold counted by a later attempt)
                return
            self._spend(hold, audio_seconds, input_tokens, output_tokens)

    def release_upload(self, hold_id: int) -> None:
        UploadHold.delete().where(UploadHold.id == hold_id).execute()

    def settle_stale_uploads(self, call_id: int) -> int:
        """Count the holds `call_id` left behind as spent; how many there were."""
        with self.db.atomic():
            holds = list(UploadHold.select().where(UploadHold.call_id == call_id))
            for hold in holds:
                self._spend(hold, hold.audio_seconds, 0, 0)
        return len(holds)

    @staticmethod
    def _spend(hold: UploadHold, audio_seconds: float, input_tokens: int, output_tokens: int) -> None:
        Usage.create(
            call_id=hold.call_id,
            at=hold.at,
            kind="transcription",
            model=hold.model,
            audio_seconds=audio_seconds,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
        hold.delete_instance()
