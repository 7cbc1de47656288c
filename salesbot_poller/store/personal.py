"""The store's removal of personal data: retention and `forget`.

Contract:
- `clear_personal` removes a call's transcript, link, number, names, the analysis' quotes
  (in the BI tables too), its tracker hits' words and the content of its delivery rows in ONE transaction, keeping
  ids, times, scores and each row's sent ids and `done_at` (nothing is sent again);
  retention calls it batch by batch (`calls_to_clear`), `forget` for one number
  (`calls_with_number`). A call a worker holds is left as it is. The number's normal form
  (`phone_key`) goes with the number.
- `calls_with_number` reads one number's calls in the index `call_phone_key` (0024_phone_key);
  the keys are computed by the caller's `key` (the store does not parse numbers), and the
  ones missing (calls stored before that step) are filled in first, page by page.
- Retention's reads are served by partial indexes of what still holds personal data
  (0023_retention_keyset): `calls_to_clear` walks the calls by (event time, id) after a
  keyset, `calls_due` counts them, `clear_unlinked_before` takes the rows about no call; a
  call or row once cleared leaves its index, so no read grows with the history cleared.
- Rows read to be written again are locked on PostgreSQL (`_for_update`).
- `reclaim_space()` (after `forget`) makes the removed text leave the database's files, not
  just its rows: SQLite zeroes deleted content as it goes (`secure_delete`, set on every
  connection), and here the search index drops the removed words (FTS5 `optimize`: until
  then its older segments keep them), free pages go back to the file system (a database
  created with `auto_vacuum = incremental`) and the WAL is checkpointed and truncated.
  PostgreSQL: `VACUUM` of the tables `clear_personal` writes, so the dead row versions'
  space is marked reusable (their bytes stay in the data files until overwritten; only
  `VACUUM FULL`, which locks the tables, rewrites them: docs/privacy.md, Retention and forgetting). Returns what ran.
- `record_deletions` notes which of a row's messages Telegram deleted or refused to delete.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

import peewee

from salesbot_poller.domain import Stage, without_personal_data
from salesbot_poller.store import bi, search, tally
from salesbot_poller.store.deliveries import DeliveryRows
from salesbot_poller.store.models import BiCall, BiObjection, BiRubricItem, Call, Clip, Delivery, TrackerHit

# A call at one of these keeps its stage when its personal data goes; any other becomes skipped.
KEPT_STAGES = frozenset({Stage.NOTIFIED.value, Stage.MISSED_ALERTED.value, Stage.SKIPPED.value})
M = TypeVar("M", bound=peewee.Model)


class PersonalData(DeliveryRows):
    """Personal data's removal: a mixin of `Store` (it blanks delivery rows, hence
    `DeliveryRows`)."""

    def calls_to_clear(self, before: int, limit: int, after: tuple[int, int] = (-1, 0)) -> list[Call]:
        """Up to `limit` calls that happened before `before` and still hold personal data (not
        claimed by a worker now), in (event time, id) order from past `after` (the keyset: the
        last call of the previous batch). Index `call_retention_due`: a call cleared leaves it."""
        query = Call.select().where(
            Call.personal_removed_at.is_null(),
            Call.event_created_at < before,
            peewee.Tuple(Call.event_created_at, Call.id) > peewee.Tuple(*after),
            Call.claimed_by.is_null(),
        )
        return list(query.order_by(Call.event_created_at, Call.id).limit(limit))

    def calls_due(self, before: int) -> int:
        """How many calls that happened before `before` still hold personal data (counted in
        the index `call_retention_due`, not the table)."""
        return int(Call.select().where(Call.personal_removed_at.is_null(), Call.event_created_at < before).count())

    def calls_with_number(
        self, key: Callable[[str | None], str], number: str, forgotten_as: str | None = None
    ) -> list[Call]:
        """Calls whose number's normal form (`key`, `phones.key`) is `number`, and calls cleared
        by an earlier `forget` of it (`forgotten_as`, when given), oldest first.

        Read in the index `call_phone_key` (0024_phone_key) by the stored key, once every
        key still missing is filled in (`fill_phone_keys`: after an upgrade, the first call
        fills the history; later, nothing is missing and that is one probe of the index)."""
        self.fill_phone_keys(key)
        found = list(Call.select().where(Call.phone_key == number, Call.phone.is_null(False)))
        if forgotten_as is not None:
            # Ids first, from the index alone: with every call's `forgotten_as` NULL, SQLite's
            # statistics price a search for one value in it as dear as reading the table.
            ids = [int(row.id) for row in Call.select(Call.id).where(Call.forgotten_as == forgotten_as)]
            for start in range(0, len(ids), 500):
                found.extend(Call.select().where(Call.id.in_(ids[start : start + 500])))
        return sorted({call.id: call for call in found}.values(), key=lambda c: (c.event_created_at, c.id))

    def fill_phone_keys(self, key: Callable[[str | None], str], page: int = 1000) -> int:
        """Store `key(phone)` as `phone_key` of each call whose number has none yet (calls
        stored before 0024_phone_key, or written without their key), `page` calls at a time
        by id (memory flat), each page committed; returns how many calls it keyed.

        A key is written only while the call still has the number it was computed from: a
        number cleared or changed meanwhile (`clear_personal`, a note read again) is never
        given a stale key."""
        filled, after = 0, 0
        while True:
            with self.db.atomic():
                rows = cast(
                    list[tuple[int, str]],
                    list(
                        Call.select(Call.id, Call.phone)
                        .where(Call.phone_key.is_null(), Call.phone.is_null(False), Call.id > after)
                        .order_by(Call.id)
                        .limit(page)
                        .tuples()
                    ),
                )
                if not rows:
                    return filled
                self._write_phone_keys([(key(phone), call_id, phone) for call_id, phone in rows])
            filled += len(rows)
            after = rows[-1][0]

    def _write_phone_keys(self, keyed: list[tuple[str, int, str]]) -> None:
        """(key, call id, the number it was computed from): PostgreSQL in one statement (a
        statement per row is a round trip each), SQLite a prepared statement run per row."""
        if isinstance(self.db, peewee.PostgresqlDatabase):
            values = ", ".join(["(%s, %s, %s)"] * len(keyed))
            self.db.execute_sql(  # type: ignore[no-untyped-call]
                f'UPDATE "call" SET phone_key = v.k FROM (VALUES {values}) AS v(k, id, phone) '
                'WHERE "call".id = v.id AND "call".phone = v.phone',
                [value for row in keyed for value in row],
            )
            return
        sql = f'UPDATE "call" SET phone_key = {self.db.param} WHERE id = {self.db.param} AND phone = {self.db.param}'
        self.db.cursor().executemany(sql, keyed)  # type: ignore[no-untyped-call]

    def deliveries_of(self, call_ids: Iterable[int], *, lock: bool = False) -> list[Delivery]:
        """Every delivery row of `call_ids`, in the order they were stored (`lock`: see
        `_for_update`)."""
        ids = list(call_ids)
        rows: list[Delivery] = []
        for start in range(0, len(ids), 500):
            query = Delivery.select().where(Delivery.call_id.in_(ids[start : start + 500]))
            rows.extend(self._for_update(query) if lock else query)
        return sorted(rows, key=lambda row: row.id)

    def _for_update(self, query: peewee.ModelSelect[M]) -> peewee.ModelSelect[M]:
        """`query` locking the rows it reads until the transaction ends, for a read-then-write:
        PostgreSQL's READ COMMITTED lets another writer in between (`forget` beside the
        service's retention); SQLite's IMMEDIATE transaction already keeps every other out."""
        return query.for_update() if isinstance(self.db, peewee.PostgresqlDatabase) else query

    def clear_personal(
        self, calls: Iterable[Call], now: int, reason: str, *, forgotten_as: str | None = None
    ) -> tuple[int, int]:
        """Remove the personal data of `calls` in ONE transaction; returns (calls changed,
        delivery rows blanked).

        Gone: the transcript, the recording link and file name, the number, the entity's name,
        the analysis' quotes and paraphrases (`domain.without_personal_data`), the tracker hits'
        words (`bi_tracker_hit.phrase`), the quote clips' Telegram file ids, and the content
        of every delivery row of the call; and, with `forgotten_as` (`forget`), the content of
        rows about no call in particular (a storm summary, a digest) that quote the number.
        Kept: ids, times, durations, manager, entity ids, scores, metrics, each row's sent ids
        and `done_at` (exactly-once holds: nothing is sent again). A row not sent yet is
        closed; a call not delivered yet becomes `skipped` with `reason`."""
        calls = list(calls)
        changed = blanked = 0
        cleared: list[int] = []
        with self.db.atomic():
            numbers = {str(call.phone) for call in calls if call.phone}
            for call in calls:
                fields: dict[str, Any] = {
                    "transcript": None,
                    "link": None,
                    "phone": None,
                    "phone_key": None,
                    "entity_name": None,
                    "audio_path": None,
                    "outbox_json": None,
                    "analysis_json": without_personal_data(call.analysis_json),
                    "personal_removed_at": call.personal_removed_at or now,
                }
                if forgotten_as is not None:
                    fields["forgotten_as"] = forgotten_as
                if call.stage not in KEPT_STAGES:
                    fields |= {"stage": Stage.SKIPPED.value, "skip_reason": reason, "next_attempt_at": 0}
                # A worker that claimed the call meanwhile keeps it (`forget` names it and is run
                # again); one that has not yet cannot claim it once it is skipped.
                if not Call.update(**fields).where(Call.id == call.id, Call.claimed_by.is_null()).execute():
                    continue
                cleared.append(call.id)
                changed += any(getattr(call, name) != value for name, value in fields.items())
                for name, value in fields.items():
                    setattr(call, name, value)
                bi.rewrite_facts(call)  # its quotes, objections and next step go from the BI tables too
            for start in range(0, len(cleared), 500):  # the words said; tracker, speaker and time stay
                TrackerHit.update(phrase="").where(TrackerHit.call_id.in_(cleared[start : start + 500])).execute()
                Clip.delete().where(Clip.call_id.in_(cleared[start : start + 500])).execute()  # the voice clips sent
            blanked += self._blank(self.deliveries_of(cleared, lock=True), now, reason)
            for number in numbers if forgotten_as is not None else ():
                quoting = Delivery.select().where(
                    Delivery.call_id.is_null(), Delivery.payload_json.contains(number), Delivery.removed_at.is_null()
                )
                blanked += self._blank(list(self._for_update(quoting)), now, reason)
        return changed, blanked

    def clear_unlinked_before(self, before: int, now: int, limit: int) -> int:
        """Blank up to `limit` rows about no call in particular (digests, storm summaries,
        notices) stored before `before`; returns how many."""
        query = Delivery.select().where(  # index `delivery_retention_due`: a row blanked leaves it
            Delivery.call_id.is_null(), Delivery.removed_at.is_null(), Delivery.created_at < before
        )
        with self.db.atomic():
            rows = self._for_update(query.order_by(Delivery.created_at, Delivery.id).limit(limit))
            return self._blank(list(rows), now, "personal data removed")

    def _blank(self, rows: Iterable[Delivery], now: int, reason: str) -> int:
        blanked = 0
        for row in rows:
            if row.removed_at is not None:
                continue
            payload = json.loads(row.payload_json)
            empty: dict[str, Any] = (
                {"path": payload.get("path"), "body": []} if "path" in payload else {"parts": []}
            ) | {"deleted": payload.get("deleted", []), "refused": payload.get("refused", [])}
            fields: dict[str, Any] = {"payload_json": json.dumps(empty), "removed_at": now}
            if row.done_at is None:  # never sent now: closed, so no lane picks it up again
                fields |= {"done_at": now, "error": f"not sent: {reason}"}
            self.update_delivery(row, **fields)
            blanked += 1
        return blanked

    def reclaim_space(self) -> str:
        """See the module contract: what was done, for the log. Run outside a transaction."""
        if isinstance(self.db, peewee.SqliteDatabase):
            done = []
            if search.indexed(self.db):
                self.db.execute_sql(f"INSERT INTO {search.FTS_TABLE}({search.FTS_TABLE}) VALUES ('optimize')")  # type: ignore[no-untyped-call]
                done.append("search index rebuilt")
            # Python's `execute` steps a statement without result columns once: one page. The
            # script interface runs it to the end (all free pages). Outside any transaction.
            self.db.connection().executescript("PRAGMA incremental_vacuum;")  # type: ignore[no-untyped-call]
            busy, _, _ = self.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()  # type: ignore[no-untyped-call]
            # A reader holding an old snapshot (a `status` at this moment) keeps the WAL: the
            # next checkpoint of the service empties it.
            done.append("free pages released" + ("" if not busy else "; WAL still in use by a reader"))
            return ", ".join(done)
        if isinstance(self.db, peewee.PostgresqlDatabase):
            tables = ", ".join(
                m._meta.table_name for m in (Call, Delivery, BiCall, BiRubricItem, BiObjection, TrackerHit)
            )
            self.db.execute_sql(f"VACUUM {tables}")  # type: ignore[no-untyped-call]
            return "VACUUM run"
        return "nothing (this database has no reclaim step)"

    def record_deletions(self, row: Delivery, deleted: Iterable[int] = (), refused: Iterable[int] = ()) -> None:
        """Note in `row` which of its messages Telegram deleted, and which it refused to delete
        for good, so neither is tried again; the row is read again first (it may have been
        blanked since `row` was read)."""
        with self.db.atomic():
            fresh = self._for_update(Delivery.select().where(Delivery.id == row.id)).get()
            payload = json.loads(fresh.payload_json)
            payload["deleted"] = sorted(set(payload.get("deleted", [])) | set(deleted))
            payload["refused"] = sorted(set(payload.get("refused", [])) | set(refused))
            self.update_delivery(fresh, payload_json=json.dumps(payload))
        row.payload_json = fresh.payload_json

    def cleared_calls(self) -> int:
        """Calls whose personal data was removed (retention or `forget`)."""
        return sum(count for _, _, cleared, count in tally.counts() if cleared)  # `store.tally`
