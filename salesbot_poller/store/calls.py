"""The store's calls: their updates stage by stage, and the reads of their state.

Contract:
- `update(call, **fields)` commits at once; the pipeline calls it after each stage, so a
  restart resumes from the last committed stage. With `analysis_json`, the call's rows in
  the BI tables (`store.bi`) are rewritten in the same transaction. Error texts
  (`last_error`, `skip_reason`) are redacted first. A `phone` written without its
  `phone_key` (`phones.key`, the caller's to compute) has its key reset, to be filled in by
  `fill_phone_keys`: a stored key is never another number's.
- `summarise` stores a summary of missed calls and marks the calls it covers in ONE transaction.
- `resume_stage` judges from a call's stored artifacts the stage it would resume from.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import peewee

from salesbot_poller.domain import Planned, Stage
from salesbot_poller.store import bi, tally
from salesbot_poller.store.deliveries import DeliveryRows
from salesbot_poller.store.models import Call


class CallRows(DeliveryRows):
    """Calls: a mixin of `Store` (it stores a storm summary's delivery rows, hence
    `DeliveryRows`)."""

    def update(self, call: Call, now: int, **fields: Any) -> None:
        """Commit `fields` of `call` (and mirror them on the instance)."""
        fields = self._redacted(fields) | {"updated_at": now}
        if "phone" in fields:  # a number written without its key: filled in by `fill_phone_keys`
            fields.setdefault("phone_key", None)
        for key, value in fields.items():
            if isinstance(value, Stage):
                fields[key] = value.value
        with self.db.atomic():  # the BI tables are written with the analysis they come from
            Call.update(**fields).where(Call.id == call.id).execute()
            for key, value in fields.items():
                setattr(call, key, value)
            if "analysis_json" in fields:
                bi.write_facts(call, now)

    def stage_counts(self) -> dict[str, int]:
        """Calls per stage (stages with none left out), from the tally (`store.tally`)."""
        found: dict[str, int] = {}
        for _, stage, _, count in tally.counts():
            found[stage] = found.get(stage, 0) + count
        return found

    def profile_counts(self, since: int | None = None) -> dict[str, dict[str, int]]:
        """Calls per profile name and stage: since `since`, those given a profile; without
        `since`, every call, from the tally (`store.tally`: "" also for those not given one)."""
        if since is None:
            found: dict[str, dict[str, int]] = {}
            for profile, stage, _, count in tally.counts():
                stages = found.setdefault(profile, {})
                stages[stage] = stages.get(stage, 0) + count
            return found
        query = Call.select(Call.profile, Call.stage, peewee.fn.COUNT(Call.id)).where(Call.profile.is_null(False))
        query = query.where(Call.event_created_at >= since)
        rows = cast(Iterable[tuple[str, str, int]], query.group_by(Call.profile, Call.stage).tuples())
        found = {}
        for profile, stage, count in rows:
            found.setdefault(str(profile), {})[str(stage)] = int(count)
        return found

    def recent_errors(self, limit: int = 5) -> list[Call]:
        query = (
            Call.select()
            .where(Call.last_error.is_null(False))
            .order_by(Call.updated_at.desc(), Call.id.desc())
            .limit(limit)
        )
        return list(query)

    def outgoing_since(self, since: int) -> list[Call]:
        """Outgoing calls that happened since `since`, oldest first: only the columns a
        callback is matched and shown by (id, number, duration, status, time, manager), never
        the transcripts of a day's calls (the follow-ups read this every intake pass)."""
        columns = (Call.id, Call.phone, Call.duration, Call.call_status, Call.event_created_at, Call.manager_name)
        query = Call.select(*columns).where(Call.direction == "out", Call.event_created_at >= since)
        return list(query.order_by(Call.event_created_at))

    def alerted_unreturned(self, since: int) -> list[Call]:
        """Missed calls since `since` whose alert was accepted and that are not returned yet."""
        query = Call.select().where(
            Call.kind == "missed",
            Call.stage == Stage.MISSED_ALERTED.value,
            Call.event_created_at >= since,
            Call.callback_call_id.is_null(),
            Call.personal_removed_at.is_null(),  # forgotten: no reply, no escalation
        )
        return list(query)

    def summarise(self, items: Iterable[Planned], calls: Iterable[Call], now: int) -> int:
        """Store the summary `items` (a storm's, the first start's) and mark each of `calls`
        still waiting for its alert (stage `missed`) as alerted by it (`summarised_in` = the
        first item's key), in ONE transaction: a crash leaves either both or neither. Returns how many were marked."""
        planned = list(items)
        ids = [call.id for call in calls]
        marked = 0
        with self.db.atomic():
            self.enqueue(planned, None, now)
            for start in range(0, len(ids), 500):  # well under SQLite's limit of bound variables
                marked += (
                    Call.update(
                        stage=Stage.MISSED_ALERTED.value,
                        summarised_in=planned[0].key,
                        updated_at=now,
                        last_error=None,
                    )
                    .where(Call.id.in_(ids[start : start + 500]), Call.stage == Stage.MISSED.value)
                    .execute()
                )
        return marked

    def missed_by_event(self, event_ids: Iterable[str]) -> list[Call]:
        """Calls of `event_ids` waiting for their missed-call alert."""
        query = Call.select().where(Call.event_id.in_(list(event_ids)), Call.stage == Stage.MISSED.value)
        return list(query)

    def resume_stage(self, call: Call) -> Stage:
        """The stage a call would resume from, judged by its stored artifacts.

        Used for a `failed` call (whose stage no longer says how far it got): the first stage
        whose result is not stored yet, so nothing already paid for is done again.
        """
        if self.find_delivery(f"call:{call.id}") is not None:
            return Stage.NOTIFYING  # parts already accepted are not sent again
        if call.kind == "missed":
            return Stage.MISSED
        if call.analysis_json is not None:
            return Stage.ANALYSED
        if call.transcript is not None:
            return Stage.TRANSCRIBED
        if call.audio_path:
            return Stage.DOWNLOADED  # the transcription stage falls back to READY if the file is gone
        if call.kind == "conversation":
            return Stage.READY
        return Stage.NEW
