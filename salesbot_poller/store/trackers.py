"""The store's tracker hits (`bi_tracker_hit`) and misses (`bi_tracker_missing`).

Contract:
- `replace_trackers(call_id, hits, missing)` replaces every hit and miss of the call (a re-run
  or a re-apply never doubles them) and the call's counts on `bi_call`, in ONE transaction
  (nested in the caller's: the transcript's, or a re-apply batch's with its cursor).
- The reads count calls by when they happened (`call.event_created_at` in [start, end)).
  A call's personal data removal blanks its hits' `phrase` (`PersonalData.clear_personal`);
  tracker, speaker and time stay, so every count stays right.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import peewee

from salesbot_poller.store import bi
from salesbot_poller.store.base import StoreBase
from salesbot_poller.store.models import Call, TrackerHit, TrackerMiss

INSERT_CHUNK = 50


class HitLike(Protocol):
    """What is stored of a hit (`trackers.Hit` is one)."""

    @property
    def tracker(self) -> str: ...
    @property
    def speaker(self) -> str: ...
    @property
    def phrase(self) -> str: ...
    @property
    def at(self) -> float | None: ...


@dataclass(frozen=True)
class StoredHit:
    """A hit as stored, with its call (the bot's and the reports' reads)."""

    call_id: int
    tracker: str
    speaker: str
    phrase: str
    at: int | None
    started_at: int = 0
    manager: str | None = None


def _period(start: int, end: int) -> peewee.Expression:
    return (Call.event_created_at >= start) & (Call.event_created_at < end)


class TrackerRows(StoreBase):
    """Tracker hits and misses: a mixin of `Store`."""

    def replace_trackers(self, call_id: int, hits: Sequence[HitLike], missing: Sequence[str]) -> None:
        """See the module contract."""
        rows = [
            {
                "call_id": call_id,
                "position": position,
                "tracker": hit.tracker,
                "speaker": hit.speaker,
                "at": None if hit.at is None else int(hit.at),
                "phrase": hit.phrase,
            }
            for position, hit in enumerate(hits)
        ]
        with self.db.atomic():
            TrackerHit.delete().where(TrackerHit.call_id == call_id).execute()
            TrackerMiss.delete().where(TrackerMiss.call_id == call_id).execute()
            for chunk in peewee.chunked(rows, INSERT_CHUNK):
                TrackerHit.insert_many(chunk).execute()
            for name in dict.fromkeys(missing):
                TrackerMiss.insert(call_id=call_id, tracker=name).execute()
            bi.count_trackers(call_id)

    def call_trackers(self, call_id: int) -> tuple[list[StoredHit], list[str]]:
        """The call's hits in transcript order, and its expected trackers not said."""
        hits = [
            StoredHit(row.call_id, row.tracker, row.speaker, row.phrase, row.at)
            for row in TrackerHit.select().where(TrackerHit.call_id == call_id).order_by(TrackerHit.position)
        ]
        missing = [
            str(row.tracker)
            for row in TrackerMiss.select().where(TrackerMiss.call_id == call_id).order_by(TrackerMiss.id)
        ]
        return hits, missing

    def tracker_call_counts(self, start: int, end: int) -> dict[str, int]:
        """Per tracker: the calls in [start, end) with at least one hit of it."""
        query = (
            TrackerHit.select(TrackerHit.tracker, peewee.fn.COUNT(peewee.fn.DISTINCT(TrackerHit.call_id)))
            .join(Call, on=(TrackerHit.call_id == Call.id))
            .where(_period(start, end))
            .group_by(TrackerHit.tracker)
            .tuples()
        )
        return {str(name): int(count) for name, count in cast(Iterable[tuple[str, int]], query)}

    def tracker_miss_counts(self, start: int, end: int) -> dict[str, int]:
        """Per expected tracker: the calls in [start, end) where it was not said."""
        query = (
            TrackerMiss.select(TrackerMiss.tracker, peewee.fn.COUNT(TrackerMiss.id))
            .join(Call, on=(TrackerMiss.call_id == Call.id))
            .where(_period(start, end))
            .group_by(TrackerMiss.tracker)
            .tuples()
        )
        return {str(name): int(count) for name, count in cast(Iterable[tuple[str, int]], query)}

    def tracker_by_manager(self, name: str, start: int, end: int) -> list[tuple[str | None, int, int]]:
        """For tracker `name`: (manager, calls with a hit, calls where it was expected and not
        said), per manager of calls in [start, end), most hits first."""
        hits = (
            TrackerHit.select(Call.manager_name, peewee.fn.COUNT(peewee.fn.DISTINCT(TrackerHit.call_id)))
            .join(Call, on=(TrackerHit.call_id == Call.id))
            .where(TrackerHit.tracker == name, _period(start, end))
            .group_by(Call.manager_name)
            .tuples()
        )
        misses = (
            TrackerMiss.select(Call.manager_name, peewee.fn.COUNT(TrackerMiss.id))
            .join(Call, on=(TrackerMiss.call_id == Call.id))
            .where(TrackerMiss.tracker == name, _period(start, end))
            .group_by(Call.manager_name)
            .tuples()
        )
        found: dict[str | None, list[int]] = {}
        for manager, count in cast(Iterable[tuple[str | None, int]], hits):
            found.setdefault(manager, [0, 0])[0] = int(count)
        for manager, count in cast(Iterable[tuple[str | None, int]], misses):
            found.setdefault(manager, [0, 0])[1] = int(count)
        ordered = sorted(found.items(), key=lambda item: (-item[1][0], -item[1][1], item[0] or ""))
        return [(manager, said, unsaid) for manager, (said, unsaid) in ordered]

    def last_tracker_hits(self, name: str, start: int, end: int, limit: int) -> list[StoredHit]:
        """The latest `limit` hits of tracker `name` in calls of [start, end), newest first."""
        query = (
            TrackerHit.select(
                TrackerHit.call_id,
                TrackerHit.tracker,
                TrackerHit.speaker,
                TrackerHit.phrase,
                TrackerHit.at,
                Call.event_created_at,
                Call.manager_name,
            )
            .join(Call, on=(TrackerHit.call_id == Call.id))
            .where(TrackerHit.tracker == name, _period(start, end))
            .order_by(Call.event_created_at.desc(), TrackerHit.call_id.desc(), TrackerHit.position)
            .limit(limit)
            .tuples()
        )
        rows = cast(Iterable[tuple[int, str, str, str, int | None, int, str | None]], query)
        return [StoredHit(*row) for row in rows]

    def tracker_counts_of(self, call_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        """Per call of `call_ids`: hits per tracker (the export's columns)."""
        found: dict[int, dict[str, int]] = {}
        for start in range(0, len(call_ids), 500):
            query = (
                TrackerHit.select(TrackerHit.call_id, TrackerHit.tracker, peewee.fn.COUNT(TrackerHit.id))
                .where(TrackerHit.call_id.in_(list(call_ids[start : start + 500])))
                .group_by(TrackerHit.call_id, TrackerHit.tracker)
                .tuples()
            )
            for call_id, name, count in cast(Iterable[tuple[int, str, int]], query):
                found.setdefault(int(call_id), {})[str(name)] = int(count)
        return found

    def transcribed_between(self, start: int, end: int, after: int, limit: int) -> list[Call]:
        """Up to `limit` calls of [start, end) with a stored transcript and an id past `after`,
        by id (a re-apply's pages: the id is its cursor)."""
        query = Call.select(Call.id, Call.profile, Call.transcript).where(
            _period(start, end), Call.transcript.is_null(False), Call.id > after
        )
        return list(query.order_by(Call.id).limit(limit))

    def count_transcribed_between(self, start: int, end: int, after: int = 0) -> int:
        query = Call.select().where(_period(start, end), Call.transcript.is_null(False), Call.id > after)
        return int(query.count())
