"""The bulk path of the store (`Store.insert_calls_bulk`) and the history benchmarks/scale.py
seeds with it (tests/scale_seed.py); on SQLite and on PostgreSQL (tests/databases.py)."""

from __future__ import annotations

import pytest

from salesbot_poller.domain import CallAnalysis, Stage
from salesbot_poller.store import BiCall, BiObjection, BiRubricItem, Call, Delivery, Store
from tests import scale_seed
from tests.bi_seed import analysis

pytestmark = pytest.mark.postgres


def _call(n: int) -> dict[str, object]:
    return {
        "event_id": f"bulk-{n}",
        "direction": "in",
        "entity_type": "leads",
        "entity_id": 7000 + n,
        "note_id": 100 + n,
        "event_created_at": 1_790_000_000 + n,
        "first_seen_at": 1_790_000_000 + n,
        "updated_at": 1_790_000_100 + n,
        "stage": "notified",
        "kind": "conversation",
        "responsible_user_id": 555,
        "manager_name": "Иван Петров",
        "analysis_json": analysis(n).model_dump_json(),
    }


def _bi_rows(call_id: int) -> tuple[dict[str, object], list[dict[str, object]], list[dict[str, object]]]:
    fact = BiCall.select().where(BiCall.call_id == call_id).dicts().get()
    items = list(BiRubricItem.select().where(BiRubricItem.call_id == call_id).order_by(BiRubricItem.position).dicts())
    objections = list(BiObjection.select().where(BiObjection.call_id == call_id).order_by(BiObjection.position).dicts())
    for row in [fact, *items, *objections]:
        row.pop("id", None)
        row.pop("call_id")
    return fact, items, objections


def test_bulk_inserted_calls_get_the_bi_rows_an_update_writes(database_url: str) -> None:
    store = Store.open(database_url, 1)
    ids = store.insert_calls_bulk([_call(3), _call(6)], now=1_790_000_200)
    assert len(ids) == 2 and [c.event_id for c in Call.select().order_by(Call.id)] == ["bulk-3", "bulk-6"]
    bulk = Call.get_by_id(ids[1])
    assert bulk.next_attempt_at == 0 and bulk.attempts == 0, "fields not given get their defaults"
    # The same call stored the usual way: recorded without analysis, then `update`.
    plain = Call.create(**(_call(6) | {"event_id": "plain-6", "analysis_json": None}))
    store.update(plain, 1_790_000_200, analysis_json=_call(6)["analysis_json"])
    assert _bi_rows(ids[1]) == _bi_rows(plain.id)
    assert BiObjection.select().where(BiObjection.call_id == ids[0]).count() == 1, "call 3 raised an objection"


def test_seeding_writes_the_calls_with_valid_analyses_and_their_bi_rows(database_url: str) -> None:
    store = Store.open(database_url, scale_seed.END)
    scale_seed.seed(store, 40)
    assert scale_seed.seeded(store) == 40 and Call.select().count() == 40
    calls = list(Call.select().order_by(Call.id))
    missed = [c for c in calls if c.kind == "missed"]
    analysed = [c for c in calls if c.analysis_json is not None]
    assert len(missed) == 8 and all(c.stage == Stage.MISSED_ALERTED for c in missed)
    assert len(analysed) == 28
    for call in analysed:
        parsed = CallAnalysis.model_validate_json(call.analysis_json)
        assert len(parsed.rubric) == len(scale_seed.ITEMS) and parsed.score is not None
    cleared = [c for c in calls if c.personal_removed_at is not None]
    assert cleared and all(c.transcript is None and c.phone is None for c in cleared), "the older half is cleared"
    assert all(1800 <= len(c.transcript.encode()) <= 5500 for c in analysed if c.transcript), "2-5 KB transcripts"
    assert BiCall.select().count() == len(analysed)
    assert BiRubricItem.select().count() == len(analysed) * len(scale_seed.ITEMS)
    assert Delivery.select().where(Delivery.kind == "escalation").count() == 4, "unreturned missed calls"
    assert [c.id for c in store.find_calls(scale_seed.RARE_WORD)], "the rare word is said somewhere"
    # A new call after the seeded ones gets the next id (PostgreSQL: the sequence was moved on).
    assert Call.create(**(_call(1) | {"analysis_json": None})).id == 41
