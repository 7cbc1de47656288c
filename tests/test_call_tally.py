"""`status` counts the calls from the tally the database keeps as calls are written
(`store.tally`), and `/find` on PostgreSQL searches the transcripts through its text index
(`store.search`): both give what reading every call would give.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import peewee
import pytest

from salesbot_poller.domain import CallEvent, Planned, Stage
from salesbot_poller.store import Call, Store
from salesbot_poller.store import search as store_search
from tests.plans import captured, plan

pytestmark = pytest.mark.postgres  # each test runs against SQLite and against PostgreSQL

NOW = 1_800_000_000


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = Store.open(database_url, NOW)
    try:
        yield opened
    finally:
        opened.close()


def event(n: int) -> CallEvent:
    return CallEvent(
        event_id=f"ev-{n}",
        direction="in",
        entity_type="leads",
        entity_id=7000 + n,
        note_id=100 + n,
        created_at=NOW - 1000 + n,
    )


def read_whole() -> tuple[dict[str, int], dict[str, dict[str, int]], int]:
    """What the tally must say, counted from every call."""
    stages: dict[str, int] = {}
    profiles: dict[str, dict[str, int]] = {}
    cleared = 0
    for call in Call.select(Call.stage, Call.profile, Call.personal_removed_at):
        stages[call.stage] = stages.get(call.stage, 0) + 1
        per = profiles.setdefault(call.profile or "", {})
        per[call.stage] = per.get(call.stage, 0) + 1
        cleared += call.personal_removed_at is not None
    return stages, profiles, cleared


def tallied(store: Store) -> tuple[dict[str, int], dict[str, dict[str, int]], int]:
    return store.stage_counts(), store.profile_counts(), store.cleared_calls()


def test_the_tally_follows_every_write_of_a_call(store: Store) -> None:
    store.record_window([event(n) for n in range(6)], [], NOW, NOW)
    assert tallied(store) == read_whole() == ({"new": 6}, {"": {"new": 6}}, 0)

    calls = list(Call.select().order_by(Call.id))
    store.update(calls[0], NOW, stage=Stage.READY, kind="conversation", profile="Продажи")
    store.update(calls[1], NOW, stage=Stage.MISSED, kind="missed", profile="")
    store.update(calls[2], NOW, last_error="нет сети")  # not a counted column: nothing moves
    store.update(calls[3], NOW, stage=Stage.SKIPPED, skip_reason="short")
    assert tallied(store) == read_whole()

    plan_item = Planned("storm:1", "alert", None, {"parts": ["…"]})
    assert store.summarise([plan_item], [calls[1]], NOW) == 1  # a bulk UPDATE of many rows
    Call.update(stage=Stage.FAILED.value).where(Call.id.in_([calls[4].id, calls[5].id])).execute()
    store.clear_personal([calls[3]], NOW, "retention")
    store.update(calls[0], NOW, profile="Сервис")  # the profile changes: the call moves row
    assert tallied(store) == read_whole()
    assert store.stage_counts() == {"ready": 1, "missed_alerted": 1, "new": 1, "skipped": 1, "failed": 2}
    assert store.profile_counts()["Сервис"] == {"ready": 1}
    assert store.cleared_calls() == 1

    Call.delete().where(Call.id == calls[5].id).execute()
    store.requeue(calls[4], Stage.READY, NOW)  # `retry`
    assert tallied(store) == read_whole()


def seed_transcripts(store: Store) -> list[int]:
    texts = [
        "Клиент спросил про доставку в Казань, цена устроила",
        "Возражение: дорого. Предложили скидку на доставку",
        "Перезвоним завтра, клиент подумает",
        "Доставка в Казань завтра, возражений нет",
    ]
    store.record_window([event(n) for n in range(len(texts))], [], NOW, NOW)
    ids = []
    for call, text in zip(Call.select().order_by(Call.id), texts, strict=True):
        store.update(call, NOW, transcript=text, kind="conversation", stage=Stage.TRANSCRIBED)
        ids.append(call.id)
    return ids


@pytest.mark.parametrize("backend", ["postgresql"])
def test_find_on_postgresql_uses_its_text_index_as_sqlite_uses_fts(store: Store) -> None:
    ids = seed_transcripts(store)
    # Every word, each a prefix of a word of the transcript; newest call first.
    assert [c.id for c in store.find_calls("доставк казань")] == [ids[3], ids[0]]
    assert [c.id for c in store.find_calls("возраж")] == [ids[3], ids[1]]
    assert [c.id for c in store.find_calls("ЗАВТРА")] == [ids[3], ids[2]]
    assert store.find_calls("самолёт") == []
    assert [c.id for c in store.find_calls("скидк", limit=1)] == [ids[1]]

    store.db.execute_sql("SET enable_seqscan = off")  # a few rows: the planner would read them whole
    with captured() as statements:
        store.find_calls("доставк казань")
    searches = [(sql, params) for sql, params in statements if "to_tsquery" in sql]
    assert searches, "the text search is asked of the database"
    lines: list[Any] = [line for sql, params in searches for line in plan(store.db, sql, params)]
    assert any(store_search.PG_INDEX in line for line in lines), lines


def test_the_search_index_is_made_where_the_database_has_one(store: Store) -> None:
    if isinstance(store.db, peewee.PostgresqlDatabase):
        assert any(index.name == store_search.PG_INDEX for index in store.db.get_indexes("call"))
    else:
        assert store_search.FTS_TABLE in store.db.get_tables()
