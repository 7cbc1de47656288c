"""`/stats` counted by the database (`team_stats.figures_in_store`): the same figures as the
old count over loaded call rows (tests/report_oracle.py), on SQLite and
PostgreSQL, without one query reading a transcript or an analysis."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from salesbot_poller.domain import CallAnalysis, RubricResult
from salesbot_poller.reports import team_stats, weekly
from salesbot_poller.store import Call, Store
from tests import report_oracle
from tests.bi_seed import seed_analysed, seed_missed
from tests.builder import T0

pytestmark = pytest.mark.postgres  # each test runs against SQLite and against PostgreSQL

NOW = int(T0.timestamp())
DAY = 24 * 3600
WINDOWS = {
    "7 days": (NOW - 7 * DAY, NOW),
    "30 days": (NOW - 30 * DAY, NOW),
    "the 30 days before": (NOW - 60 * DAY, NOW - 30 * DAY),
    "everything": (0, NOW + DAY),
}
TRANSCRIPT = "Менеджер: Добрый день. Клиент: Нужна доставка стеллажей в Казань. " * 20


def rubric(*verdicts: str, needs_title: str = "Выявление потребности") -> str:
    items = [("greeting", "Приветствие"), ("needs", needs_title), ("offer", "Презентация"), ("extra", "Допродажа")]
    results = [
        RubricResult(item_id=item_id, title=title, weight=1.0, verdict=verdict)
        for (item_id, title), verdict in zip(items, verdicts, strict=False)
    ]
    scored = [r for r in results if r.verdict in team_stats.CREDIT]
    score = round(100 * sum(team_stats.CREDIT[r.verdict] for r in scored) / len(scored)) if scored else None
    return CallAnalysis(summary="s", topic="t", rubric=results, score=score).model_dump_json()


def add(store: Store, n: int, at: int, manager: str | None, analysis: str | None = None, **fields: Any) -> None:
    """One call stored as the pipeline would: its analysis through `Store.update` (BI rows too)."""
    row = Call.create(
        **{
            "event_id": f"edge-{n}",
            "direction": "in",
            "entity_type": "leads",
            "entity_id": 9000 + n,
            "note_id": 9000 + n,
            "event_created_at": at,
            "first_seen_at": at,
            "updated_at": at,
            "stage": "notified",
            "kind": "conversation",
            "duration": 120,
            "call_status": 4,
            "responsible_user_id": 1,
            "manager_name": manager,
            "transcript": TRANSCRIPT,
        }
        | fields
    )
    if analysis is not None:
        store.update(row, at, analysis_json=analysis)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store.open(database_url, NOW)
    seed_analysed(store, 400, start=NOW - 62 * DAY, spacing=62 * DAY // 400)
    seed_missed(store, NOW - 3 * DAY)
    day = NOW - 2 * DAY
    add(store, 1, day, None, rubric("done", "missed", "partly", needs_title="Потребности (старое)"))
    add(store, 2, day + 60, "", rubric("missed", "missed", "done"))  # "" and None: one manager
    add(store, 3, day + 120, "Иван Петров", "{broken")  # unreadable: counted as such, no score
    add(store, 4, day + 180, "Мария Сидорова", "")  # empty: not counted as unreadable
    add(store, 5, day + 240, "Иван Петров", rubric("missed", "missed"), call_status=6)  # not reached
    add(store, 6, day + 300, "Иван Петров", rubric("missed"), duration=0)  # did not last
    add(store, 7, day + 360, "Иван Петров", rubric("done"), duration=None)
    add(store, 8, day + 420, "Олег Кузнецов", rubric("not_applicable", "not_assessed"))  # score None
    add(store, 9, day + 480, "Олег Кузнецов", rubric("done", "partly", "missed", "missed"), direction="out")
    add(store, 10, NOW - 6 * DAY, "Мария Сидорова", rubric("partly", "done", needs_title="Потребности (новое)"))
    add(store, 11, NOW - 6 * DAY, "Новый менеджер", None, kind="missed", duration=0)  # missed calls only
    add(store, 12, NOW - 6 * DAY, "Тихий менеджер", None, duration=0)  # no answered call at all
    try:
        yield store
    finally:
        store.close()


def items(manager: team_stats.ManagerFigures) -> list[tuple[str, str, float, int, int]]:
    return [(key, t.title, t.credit, t.scored, t.missed) for key, t in manager.items.items()]


def described(figures: team_stats.Figures) -> list[object]:
    managers = [
        (m.name, m.calls, m.talk_seconds, m.missed, m.returned, m.average, m.weakest, m.previous, items(m))
        for m in figures.managers
    ]
    return [managers, figures.unreadable, team_stats.team_misses(figures.managers)]


@pytest.mark.parametrize("window", WINDOWS.values(), ids=WINDOWS.keys())
def test_the_database_counts_the_same_figures_as_the_loaded_calls_did(store: Store, window: tuple[int, int]) -> None:
    old = report_oracle.figures(report_oracle.calls_between(store, *window))
    new = team_stats.figures_in_store(store, *window)
    assert len(old.managers) >= 3 and any(m.items for m in old.managers)  # the window has something to count
    assert described(new) == described(old)
    head = "📊 <b>Статистика</b>"
    assert weekly.render_team(head, new) == weekly.render_team(head, old)


def test_the_edge_calls_are_counted_as_the_old_count_did(store: Store) -> None:
    figures = {m.name: m for m in team_stats.figures_in_store(store, *WINDOWS["7 days"]).managers}
    unknown = figures["не назначен"]
    assert (unknown.calls, unknown.average, list(unknown.items)) == (2, 42, ["greeting", "needs", "offer"])  # 50, 33
    assert figures["Новый менеджер"].missed == 1 and figures["Тихий менеджер"].calls == 0
    assert unknown.items["needs"].title == "Потребности (старое)"  # the title of the first call (by id) that had it
    assert figures["Мария Сидорова"].items["needs"].title == "Выявление потребности"  # not the later call's
    assert team_stats.figures_in_store(store, *WINDOWS["7 days"]).unreadable == 1


def test_stats_queries_read_no_transcript_nor_analysis(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        team_stats.figures_in_store(store, *WINDOWS["30 days"])
    queries = [str(record.msg[0]) for record in caplog.records if record.name == "peewee" and record.msg]
    assert len(queries) == 3  # the managers' totals, the rubric's totals, the items' first titles
    assert sum("GROUP BY" in query for query in queries) == 2
    for query in queries:
        assert "transcript" not in query
        selected = re.match(r"SELECT (.*?) FROM ", query, re.S)
        assert selected is not None
        for column in top_level_items(selected[1]):  # what comes back: figures, never a text column
            assert not re.fullmatch(r'("t\d+"\.)?("analysis_json"|"transcript"|\*)', column), query


def top_level_items(select_list: str) -> list[str]:
    """The comma-separated items of a SELECT list, commas inside parentheses aside."""
    items, depth, current = [], 0, ""
    for char in select_list:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += char
    return [*items, current.strip()]
