"""BI tables: the stored analysis normalised into `bi_call`, `bi_rubric_item` and
`bi_objection`, written in the transaction that stores the analysis, filled for older calls
by `0013_bi`, cleared with the personal data; and docs/bi.md's queries run on them."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from salesbot_poller.domain import CallAnalysis, NextStep, ObjectionHandling, RubricResult
from salesbot_poller.lanes import run_once
from salesbot_poller.store import BiCall, BiObjection, BiRubricItem, Call, Store
from salesbot_poller.store import bi as store_bi
from tests.bi_seed import seed_analysed, seed_missed, seed_trackers
from tests.builder import T0, build_rig
from tests.loopback_app import add_call, at, ts

DOCS = Path(__file__).resolve().parent.parent / "docs" / "bi.md"
QUERY_NAMES = [
    "score-per-manager-week",
    "most-missed-items",
    "objections-per-week",
    "missed-returned-within-sla",
    "cost-per-day",
    "hits-per-tracker-week",
    "managers-skipping-mandatory-phrase",
]


def quoted_analysis() -> CallAnalysis:
    return CallAnalysis(
        summary="Клиент спросил цену",
        rubric=[
            RubricResult(
                item_id="greeting",
                title="Приветствие",
                weight=1,
                verdict="done",
                evidence="Добрый день",
                confidence=0.9,
                verified=True,
                at=2,
            ),
            RubricResult(
                item_id="close", title="Следующий шаг", weight=2, verdict="missed", evidence="", confidence=0.7
            ),
        ],
        objections=[
            ObjectionHandling(objection="Дорого", handling="Рассрочка"),
            ObjectionHandling(objection="Подумаю", handling=""),
        ],
        next_step=NextStep(action="Отправить КП", due_date="2026-11-27"),
        score=33,
    )


def test_an_analysed_call_gets_its_rows_in_every_bi_table(tmp_path: Path) -> None:
    rig = build_rig(tmp_path)
    add_call(rig, 1, minutes=-10, duration=125)
    run_once(rig.app, at(0))
    (call,) = Call.select()
    fact = BiCall.get(BiCall.call_id == call.id)
    assert (fact.started_at, fact.score, fact.profile, fact.manager_id, fact.manager) == (
        ts(-10),
        50,
        "",
        555,
        "Иван Петров",
    )
    assert (fact.entity_type, fact.entity_id, fact.direction, fact.duration) == ("leads", 7001, "in", 125)
    assert (fact.next_step_action, fact.next_step_due, fact.analysed_at) == ("Отправить КП", None, ts(0))
    (item,) = BiRubricItem.select().where(BiRubricItem.call_id == call.id)
    assert (item.item_id, item.title, item.weight, item.verdict, item.position) == (
        "greeting",
        "Приветствие",
        1,
        "partly",
        0,
    )
    (objection,) = BiObjection.select()
    assert (objection.objection, objection.handling) == ("Дорого", "Предложил рассрочку")


def test_a_new_analysis_replaces_the_rows_and_every_field_is_kept(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path}/db.sqlite", 1)
    call = Call.create(
        event_id="e1",
        direction="out",
        entity_type="contacts",
        entity_id=9,
        note_id=1,
        event_created_at=100,
        first_seen_at=100,
        updated_at=100,
        duration=40,
    )
    store.update(call, 200, analysis_json=CallAnalysis(summary="", rubric=[], score=None).model_dump_json())
    assert BiCall.get_by_id(call.id).score is None and BiRubricItem.select().count() == 0
    store.update(call, 300, analysis_json=quoted_analysis().model_dump_json())
    fact = BiCall.get_by_id(call.id)
    assert (fact.score, fact.analysed_at, fact.next_step_due, fact.manager) == (33, 300, "2026-11-27", None)
    items = list(BiRubricItem.select().order_by(BiRubricItem.position))
    assert [(i.item_id, i.verdict, i.evidence, i.verified, i.confidence, i.at) for i in items] == [
        ("greeting", "done", "Добрый день", True, 0.9, 2),
        ("close", "missed", "", None, 0.7, None),
    ]
    assert [(o.position, o.objection, o.handling) for o in BiObjection.select().order_by(BiObjection.position)] == [
        (0, "Дорого", "Рассрочка"),
        (1, "Подумаю", ""),
    ]
    store.close()


def test_the_analysis_and_its_bi_rows_are_one_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store.open(f"sqlite:///{tmp_path}/db.sqlite", 1)
    call = Call.create(
        event_id="e1",
        direction="in",
        entity_type="leads",
        entity_id=9,
        note_id=1,
        event_created_at=100,
        first_seen_at=100,
        updated_at=100,
    )

    def broken(model: object, rows: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(store_bi, "_insert", lambda calls, now: broken(None, None))
    with pytest.raises(RuntimeError):
        store.update(call, 200, stage="analysed", analysis_json=quoted_analysis().model_dump_json())
    fresh = Call.get_by_id(call.id)
    assert fresh.analysis_json is None and fresh.stage == "new", "no analysis stored without its BI rows"
    assert BiCall.select().count() == 0
    store.close()


def test_removing_personal_data_clears_quotes_objections_and_next_step_but_keeps_scores(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path}/db.sqlite", 1)
    call = Call.create(
        event_id="e1",
        direction="in",
        entity_type="leads",
        entity_id=9,
        note_id=1,
        phone="+79990000001",
        event_created_at=100,
        first_seen_at=100,
        updated_at=100,
        stage="notified",
    )
    store.update(call, 300, analysis_json=quoted_analysis().model_dump_json())
    store.clear_personal([call], 5000, "personal data removed")
    fact = BiCall.get_by_id(call.id)
    assert (fact.score, fact.analysed_at, fact.next_step_action, fact.next_step_due) == (33, 300, "", None)
    items = list(BiRubricItem.select().order_by(BiRubricItem.position))
    assert [(i.verdict, i.evidence) for i in items] == [("done", ""), ("missed", "")]
    assert BiObjection.select().count() == 0
    store.close()


@pytest.mark.slow
def test_the_migration_fills_the_tables_for_calls_analysed_before(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    store = Store.open(url, 1)
    seed_analysed(store, 1200, start=ts(-10_000), spacing=60)  # more than a page of the backfill
    before = [
        (f.call_id, f.score, f.manager, f.next_step_action, f.duration)
        for f in BiCall.select().order_by(BiCall.call_id)
    ]
    items_before = BiRubricItem.select().count()
    assert len(before) == 1200 and items_before == 4 * 1200
    for statement in (
        "DROP TABLE bi_call",
        "DROP TABLE bi_rubric_item",
        "DROP TABLE bi_objection",
        "DELETE FROM migration WHERE name = '0013_bi'",
    ):
        store.db.execute_sql(statement)  # type: ignore[no-untyped-call]  # the schema of 0011
    store.close()
    store = Store.open(url, 2)
    assert store.missing_migrations() == []
    after = [
        (f.call_id, f.score, f.manager, f.next_step_action, f.duration)
        for f in BiCall.select().order_by(BiCall.call_id)
    ]
    assert after == before and BiRubricItem.select().count() == items_before
    first = BiCall.get_by_id(before[0][0])
    assert first.analysed_at == Call.get_by_id(first.call_id).updated_at, "the call's last update stands for it"
    assert BiObjection.select().count() == sum(1 for n in range(1200) if n % 3 == 0) + sum(
        1 for n in range(1200) if n % 5 == 0
    )
    store.close()


# --- docs/bi.md ------------------------------------------------------------------------


def documented_queries() -> dict[tuple[str, str], str]:
    """(name, dialect) -> SQL of every ```sql block of docs/bi.md, whose first line is
    `-- bi: NAME (sqlite|postgresql|both)`."""
    found: dict[tuple[str, str], str] = {}
    for block in re.findall(r"```sql\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S):
        head = re.match(r"-- bi: ([a-z-]+) \((sqlite|postgresql|both)\)\n", block)
        assert head, f"a query of docs/bi.md has no `-- bi: NAME (dialect)` line: {block[:60]!r}"
        found[(head[1], head[2])] = block
    return found


def test_docs_give_each_of_the_five_queries_for_both_databases() -> None:
    queries = documented_queries()
    names = {name for name, _ in queries}
    assert names == set(QUERY_NAMES)
    for name in QUERY_NAMES:
        assert (name, "both") in queries or {(name, "sqlite"), (name, "postgresql")} <= set(queries), name


def test_every_documented_query_runs_on_a_seeded_database(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path}/db.sqlite", 1)
    week = 7 * 24 * 3600
    seed_analysed(store, 300, start=int(T0.timestamp()) - 3 * week, spacing=3 * week // 300)
    seed_missed(store, int(T0.timestamp()))
    hits, misses = seed_trackers(store)
    store.close()
    db = sqlite3.connect(tmp_path / "db.sqlite")
    results: dict[str, list[tuple[object, ...]]] = {}
    for (name, dialect), sql in documented_queries().items():
        if dialect != "postgresql":
            results[name] = db.execute(sql).fetchall()
    db.close()
    assert set(results) == set(QUERY_NAMES)
    weekly = results["score-per-manager-week"]
    assert {row[1] for row in weekly} == {"Иван Петров", "Мария Сидорова", "Олег Кузнецов"}
    assert len({row[0] for row in weekly}) >= 3 and sum(int(str(row[2])) for row in weekly) == 300
    missed = results["most-missed-items"]
    assert {row[0] for row in missed} == {"greeting", "needs", "offer", "close"}
    assert all(0 < float(str(row[4])) < 100 for row in missed)
    assert {row[1] for row in results["objections-per-week"]} == {"Дорого", "Подумаю"}
    (sla,) = results["missed-returned-within-sla"]
    assert sla[1:] == (6, 2, 2, 2)
    cost = results["cost-per-day"]
    assert sum(int(str(row[1])) for row in cost) >= 300 and all(float(str(row[5])) > 0 for row in cost)
    per_week = results["hits-per-tracker-week"]
    assert {row[1] for row in per_week} == {"Конкурент", "Скидка"} and sum(int(str(r[3])) for r in per_week) == hits
    skipping = results["managers-skipping-mandatory-phrase"]
    assert {row[1] for row in skipping} == {"Запись разговора"} and len(skipping) == 3
    assert sum(int(str(row[2])) for row in skipping) == misses and all(0 < float(str(r[4])) < 100 for r in skipping)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_every_documented_query_runs_on_postgresql_too(database_url: str) -> None:
    url = database_url  # a fresh database on the test server (tests/databases.py)
    store = Store.open(url, 1)
    week = 7 * 24 * 3600
    seed_analysed(store, 300, start=int(T0.timestamp()) - 3 * week, spacing=3 * week // 300)
    seed_missed(store, int(T0.timestamp()))
    hits, misses = seed_trackers(store)
    results = {
        name: store.db.execute_sql(sql).fetchall()  # type: ignore[no-untyped-call]
        for (name, dialect), sql in documented_queries().items()
        if dialect != "sqlite"
    }
    store.close()
    assert set(results) == set(QUERY_NAMES)
    assert sum(int(row[2]) for row in results["score-per-manager-week"]) == 300
    assert sum(int(row[3]) for row in results["hits-per-tracker-week"]) == hits
    assert sum(int(row[2]) for row in results["managers-skipping-mandatory-phrase"]) == misses
    (sla,) = results["missed-returned-within-sla"]
    assert tuple(sla[1:]) == (6, 2, 2, 2)
