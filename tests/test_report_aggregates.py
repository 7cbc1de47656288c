"""The weekly report, its chart, the digest, `/stats` and `/worst` counted by the database
(issue 29) say exactly what the old count over loaded call rows said (tests/report_oracle.py,
the old code kept as the oracle), on SQLite and PostgreSQL, over a seeded history: nine weeks
around a clock change, managers None and "", profiles, missed calls returned or not, items of
every verdict, None scores, unreadable analyses, duplicate and blank objections, tied scores.
And none of their queries brings back a transcript, a stored analysis or a whole call row."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import peewee
import pytest

from salesbot_poller.domain import (
    CallAnalysis,
    ModelUsage,
    ObjectionGroup,
    ObjectionGrouping,
    ObjectionHandling,
    RubricResult,
)
from salesbot_poller.pipeline.context import App
from salesbot_poller.reports import bot_answers, digest, weekly
from salesbot_poller.reports.topics import topic_block
from salesbot_poller.store import Call
from salesbot_poller.store import bi as store_bi
from tests import report_oracle
from tests.builder import build_rig
from tests.test_bot_stats import top_level_items

pytestmark = pytest.mark.postgres  # each test runs against SQLite and against PostgreSQL

BERLIN = ZoneInfo("Europe/Berlin")  # summer time ends on 25.10.2026: a 169-hour week
NOW = int(datetime(2026, 11, 25, 9, 0, tzinfo=UTC).timestamp())
DAY = 24 * 3600
FIRST = NOW - 66 * DAY  # nine weeks and a half of history
MONDAYS = [date(2026, 11, 16), date(2026, 11, 9), date(2026, 10, 26), date(2026, 10, 19)]
TOPICS = ["Поставка", "Монтаж"]
MANAGERS = ["Иван Петров", "Мария Сидорова", "Олег Кузнецов", None, "", "Анна Белова"]
ITEMS = [("greeting", "Приветствие"), ("needs", "Выявление потребности"), ("offer", "Презентация"), ("close", "Итог")]
VERDICTS = ["done", "partly", "missed", "not_applicable", "not_assessed"]
OBJECTIONS = [
    "Дорого",
    "дорого!",
    " Дорого ",
    "   ",
    "?!",
    "Подумаю",
    "У конкурентов дешевле",
    "Нет бюджета",
    "подумаю",
]


def analysis_json(rng: random.Random, n: int) -> str:
    """A stored analysis: every verdict, now and then a renamed item, None scores, or one that
    cannot be read."""
    kind = rng.random()
    if kind < 0.04:
        return "{broken"
    if kind < 0.06:
        return '{"summary": 5, "rubric": "no"}'  # JSON, not an analysis
    rubric = [
        RubricResult(
            item_id=item_id,
            title=title if rng.random() < 0.9 else f"{title} (старое)",
            weight=1.0,
            verdict=rng.choice(VERDICTS),
        )
        for item_id, title in ITEMS[: rng.randint(1, len(ITEMS))]
    ]
    score = None if rng.random() < 0.1 else rng.choice([0, 10, 35, 50, 50, 67, 80, 100])
    objections = [ObjectionHandling(objection=rng.choice(OBJECTIONS), handling="") for _ in range(rng.randint(0, 3))]
    topic, closed = (rng.choice([*TOPICS, "Другое"]), True) if rng.random() < 0.7 else ("что-то своё", False)
    return CallAnalysis(
        summary=f"Разговор {n}", topic=topic, topic_closed=closed, rubric=rubric, objections=objections, score=score
    ).model_dump_json()


def seeded_calls() -> list[dict[str, object]]:
    rng = random.Random(29)
    rows: list[dict[str, object]] = []
    at = FIRST
    for n in range(420):
        at += rng.choice([0, 60, 3600, 4 * 3600, 8 * 3600, 13 * 3600])  # 0: two calls at the same second
        missed = rng.random() < 0.15
        row: dict[str, object] = {
            "event_id": f"agg-{n}",
            "direction": "in" if missed or rng.random() < 0.7 else "out",
            "entity_type": rng.choice(["leads", "contacts"]),
            "entity_id": 5000 + n,
            "note_id": 5000 + n,
            "event_created_at": at,
            "first_seen_at": at,
            "updated_at": at + 60,
            "stage": "missed_alerted" if missed else "notified",
            "kind": "missed" if missed else rng.choice(["conversation"] * 12 + [None]),
            "duration": 0 if missed else rng.choice([30, 95, 240, 600, 0, None]),
            "call_status": rng.choice([None, 4, 4, 6, 7]),
            "responsible_user_id": 1,
            # Анна only in the first weeks: one of the chart's managers not in the report's week.
            "manager_name": rng.choice(MANAGERS if at < NOW - 45 * DAY else MANAGERS[:5]),
            "entity_name": rng.choice([f"ООО Ромашка-{n}", None, None]),
            "phone": rng.choice([f"+7999{n:07d}", None]),
            "transcript": "Менеджер: Добрый день. Клиент: Здравствуйте. " * 30,
            "profile": rng.choice(["Продажи", "Сервис", "", None, None]),
        }
        if row["profile"] is None and rng.random() < 0.5:
            row["skip_reason"] = "no profile"
        if not missed:
            row["analysis_json"] = rng.choice(["", None]) if rng.random() < 0.05 else analysis_json(rng, n)
        rows.append(row)
    return rows


def seed(app: App) -> None:
    with app.store.db.atomic():
        for chunk in peewee.chunked(seeded_calls(), 50):
            Call.insert_many(chunk).execute()
        missed = list(Call.select(Call.id).where(Call.kind == "missed").order_by(Call.id))
        for k, call in enumerate(missed):
            if k % 3 != 2:  # two of three returned
                Call.update(callback_call_id=call.id + 1).where(Call.id == call.id).execute()
        store_bi.backfill()


@pytest.fixture
def app(tmp_path: Path, database_url: str) -> Iterator[App]:
    rig = build_rig(tmp_path, storage={"database": database_url}, analysis={"topics": TOPICS}, tz=BERLIN)
    seed(rig.app)
    try:
        yield rig.app
    finally:
        rig.app.store.close()


class FakeGrouper:
    """Groups as a chat model would, over the first `limit` objections it is given (as the real
    grouper cuts to `OBJECTIONS_GROUPED`): by first letter, deterministic. Records each list."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.given: list[list[str]] = []

    def group(self, objections: Sequence[str]) -> ObjectionGrouping:
        self.given.append(list(objections))
        letters: dict[str, int] = {}
        for text in list(objections)[: self.limit]:
            letters[text[0].lower()] = letters.get(text[0].lower(), 0) + 1
        groups = [ObjectionGroup(f"На «{letter}»", count) for letter, count in letters.items()]
        return ObjectionGrouping(sorted(groups, key=lambda g: -g.count), ModelUsage(model="fake"))


def test_the_seeded_history_has_every_case_the_reports_count(app: App) -> None:
    rows = seeded_calls()
    assert {row["manager_name"] for row in rows} == set(MANAGERS)
    assert sum(row["kind"] == "missed" for row in rows) > 30
    assert sum(str(row.get("analysis_json")).startswith("{broken") for row in rows) > 3
    week = weekly.midnight(MONDAYS[0], BERLIN), weekly.midnight(date(2026, 11, 23), BERLIN)
    texts = [t.text for t in app.store.objection_totals(*week)]
    assert "   " in texts and "?!" in texts and "Дорого" in texts and "дорого!" in texts


@pytest.mark.parametrize("monday", MONDAYS, ids=str)
def test_the_weekly_report_says_what_the_loaded_rows_said(app: App, monday: date) -> None:
    assert app.objections is None  # identical texts counted
    new = weekly.plan_week(app, monday, NOW, "weekly:test")[0].payload["parts"]
    assert new == report_oracle.week_parts(app, monday)
    assert "Частые возражения клиентов" in "".join(new) and "По темам" in "".join(new)
    names = [m.name for m in report_oracle.figures(report_oracle.calls_between(app.store, *_week(monday))).managers]
    for shown in (names, names[:2], []):  # the others after them: in the order their first scored call came
        series, labels = weekly.chart_series(app, monday, shown)
        old_series, old_labels = report_oracle.chart_series(app, monday, shown)
        assert (list(series.items()), labels) == (list(old_series.items()), old_labels)


def test_a_grouper_is_given_the_first_objections_the_old_report_gave_it(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(weekly, "OBJECTIONS_GROUPED", 7)  # fewer than the week has
    monkeypatch.setattr("salesbot_poller.store.report_figures.TEXT_PAGE", 3)  # read over several pages
    grouper = FakeGrouper(limit=7)
    app.objections = grouper
    new = weekly.plan_week(app, MONDAYS[0], NOW, "weekly:test")[0].payload["parts"]
    old = report_oracle.week_parts(app, MONDAYS[0])
    sent, everything = grouper.given
    assert len(everything) > 7 and sent == everything[:7]
    assert new == old


def test_the_digest_says_what_the_loaded_rows_said(app: App) -> None:
    for end in range(NOW - 20 * DAY, NOW + 1, DAY // 2):
        start = end - DAY
        topics = topic_block(app, start, end)
        new_figures, old_figures = digest.collect(app, start, end), report_oracle.digest_managers(app, start, end)
        new_counts, old_counts = digest.profile_counts(app, start, end), report_oracle.profile_counts(app, start, end)
        assert new_counts == old_counts
        new = digest.render_digest(new_figures, start, end, BERLIN, "cards", new_counts, topics)
        assert new == digest.render_digest(old_figures, start, end, BERLIN, "cards", old_counts, topics)


@pytest.mark.parametrize("days", [7, 30])
def test_stats_says_what_the_loaded_rows_said(app: App, days: int) -> None:
    assert bot_answers.stats(app, [f"{days}d"], NOW) == report_oracle.stats_parts(app, days, NOW)


def test_worst_lists_what_the_loaded_rows_listed(app: App) -> None:
    for now in (NOW, NOW - 9 * DAY, NOW - 30 * DAY):
        for count in (1, 5, 20):
            assert bot_answers.worst(app, [str(count)], now) == report_oracle.worst_parts(app, count, now)


def test_no_report_query_brings_back_a_transcript_an_analysis_or_a_whole_row(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    app.objections = FakeGrouper(limit=300)
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        weekly.plan_week(app, MONDAYS[0], NOW, "weekly:test")
        digest.collect(app, NOW - DAY, NOW)
        digest.profile_counts(app, NOW - DAY, NOW)
        bot_answers.stats(app, ["30d"], NOW)
        bot_answers.worst(app, ["20"], NOW)
    queries = [str(record.msg[0]) for record in caplog.records if record.name == "peewee" and record.msg]
    assert len(queries) > 10
    for query in queries:
        if not query.startswith("SELECT"):
            continue  # the grouping's usage row
        selected = re.match(r"SELECT (.*?) FROM ", query, re.S)
        assert selected is not None
        for column in top_level_items(selected[1]):
            # (analysis_json may be tested for NULL: "an analysis that cannot be read")
            assert not re.fullmatch(r'("t\d+"\.)?("analysis_json"|"transcript"|\*)', column), query


def _week(monday: date) -> tuple[int, int]:
    return weekly.midnight(monday, BERLIN), weekly.midnight(monday + weekly.WEEK, BERLIN)


def test_the_chart_weeks_cross_the_clock_change() -> None:
    starts = [weekly.midnight(date(2026, 10, 19), BERLIN), weekly.midnight(date(2026, 10, 26), BERLIN)]
    assert starts[1] - starts[0] == 7 * DAY + 3600
    assert datetime.fromtimestamp(FIRST, UTC) < datetime(2026, 9, 22, tzinfo=UTC)


def test_managers_first_scored_in_the_same_second_are_charted_in_the_order_of_their_calls(app: App) -> None:
    at = weekly.midnight(date(2026, 9, 28), BERLIN) + 3600  # the first week of the chart of 16.11
    score = CallAnalysis(summary="s", topic="t", score=40).model_dump_json()
    for n, manager in enumerate(["Яна Первая", "Зоя Вторая"]):  # Яна's call first, her name last
        row = seeded_calls()[0] | {"event_id": f"tie-{n}", "manager_name": manager, "event_created_at": at}
        Call.insert(row | {"kind": "conversation", "analysis_json": score}).execute()
    with app.store.db.atomic():
        store_bi.backfill()
    series, _ = weekly.chart_series(app, MONDAYS[0], [])
    assert list(series)[-2:] == ["Яна Первая", "Зоя Вторая"]  # one week each: after the others
    assert list(series.items()) == list(report_oracle.chart_series(app, MONDAYS[0], [])[0].items())
