"""The store's quote clips (`clip`, 0022_clips): the Telegram file id of each clip sent.

Contract:
- `stored_clip(call_id, second)` is the clip sent for that quote, or None.
- `save_clip(...)` records one; a second save of the same (call, second) replaces the first
  (two presses that both cut: the later file id is as good).
- A call's clips go with its personal data (`PersonalData.clear_personal`: retention and
  `forget`), and with `forget_clips(call_ids)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from salesbot_poller.store.base import StoreBase
from salesbot_poller.store.models import Clip


@dataclass(frozen=True)
class StoredClip:
    file_id: str
    kind: str  # "voice" / "audio"


class ClipRows(StoreBase):
    """Quote clips: a mixin of `Store`."""

    def stored_clip(self, call_id: int, second: int) -> StoredClip | None:
        row = Clip.get_or_none((Clip.call_id == call_id) & (Clip.second == second))
        return None if row is None else StoredClip(str(row.file_id), str(row.kind))

    def save_clip(self, call_id: int, second: int, file_id: str, kind: str, now: int) -> None:
        Clip.insert(call_id=call_id, second=second, file_id=file_id, kind=kind, created_at=now).on_conflict(
            conflict_target=[Clip.call_id, Clip.second],
            update={Clip.file_id: file_id, Clip.kind: kind, Clip.created_at: now},
        ).execute()

    def forget_clips(self, call_ids: Iterable[int]) -> int:
        """Delete the clips of `call_ids`; how many rows."""
        ids = list(call_ids)
        return sum(
            Clip.delete().where(Clip.call_id.in_(ids[start : start + 500])).execute()
            for start in range(0, len(ids), 500)
        )
