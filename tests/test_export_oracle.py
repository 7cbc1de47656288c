"""`export` reads plain rows and formats them without a model or a datetime per call; its
output is, byte for byte, what the export printed before (tests/export_oracle.py), on a
seeded database holding every kind of column: trackers, topics, people's corrections,
missing values, cells a spreadsheet would run, text CSV must quote, times across a change
of clocks and from before standard time, calls sharing a start time across a page boundary."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from salesbot_poller.cli.export import export
from salesbot_poller.cli.local_times import LocalTimes
from salesbot_poller.store import BiCall, Call, Store
from salesbot_poller.store.models import BiObjection, BiRubricItem
from tests import export_oracle
from tests.bi_seed import seed_analysed, seed_trackers

START = int(datetime(2026, 10, 24, 18, 0, tzinfo=UTC).timestamp())  # Berlin's clocks go back at 01:00 UTC Oct 25
CALLS = 1100  # three pages
SPACING = 60
OLD = int(datetime(1900, 6, 1, 12, 0, 17, tzinfo=UTC).timestamp())  # Moscow's local mean time: +02:30:17
ZONES: list[tzinfo] = [
    UTC,
    ZoneInfo("Europe/Moscow"),
    ZoneInfo("Europe/Berlin"),
    ZoneInfo("Australia/Lord_Howe"),
    timezone(timedelta(hours=5, minutes=30)),
]
TRACKERS = ["Конкурент", "Скидка", "Никто не сказал"]


def _odd_calls(store: Store, backend: str) -> None:
    """Every kind of value a column can hold, on some of the seeded calls."""
    BiCall.update(manager='=HYPERLINK("x")', topic="+тема; с точкой с запятой").where(BiCall.call_id == 2).execute()
    BiCall.update(manager=None, manager_id=None, duration=None, score=None, next_step_due=None).where(
        BiCall.call_id == 3
    ).execute()
    BiCall.update(next_step_action='-1 день, "кавычки"\nи новая строка', profile="@sales", entity_type="\tleads").where(
        BiCall.call_id == 4
    ).execute()
    BiCall.update(started_at=OLD, analysed_at=-2_000_000_000).where(BiCall.call_id == 5).execute()
    BiCall.update(started_at=START + 500 * SPACING).where(BiCall.call_id.between(495, 510)).execute()  # one time
    BiCall.update(topic="Доставка", profile="service").where(BiCall.call_id.in_(list(range(9, CALLS, 9)))).execute()
    BiRubricItem.update(verified=None, at=None, confidence=0.0, evidence="=цитата").where(
        BiRubricItem.call_id == 6
    ).execute()
    BiRubricItem.update(item_id="extra", title="Дополнительный", weight=1.5).where(
        BiRubricItem.call_id.in_(list(range(11, CALLS, 11))), BiRubricItem.position == 3
    ).execute()
    BiRubricItem.update(item_id="greeting", verdict="missed").where(
        BiRubricItem.call_id == 7, BiRubricItem.position == 2
    ).execute()  # the same item twice in a call: the later verdict wins, as before
    BiObjection.insert(call_id=8, position=5, objection='@дорого | очень; "совсем"', handling="-").execute()
    for call_id in (10, 20, 600):  # corrected verdicts and scores: the export prints the model's, as before
        call = Call.get_by_id(call_id)
        store.correct_verdict(call, "needs", 1, "missed", "Мария", 77, START)
    if backend == "sqlite":  # bytes that are not UTF-8, written by another tool
        store.db.execute_sql("UPDATE bi_call SET manager = CAST(X'D0FF41' AS TEXT) WHERE call_id = 12")  # type: ignore[no-untyped-call]
        BiCall.update(manager="\x00items\x00").where(BiCall.call_id == 13).execute()  # JSON Lines' own marker
    else:  # floats SQLite cannot hold (it stores NULL for NaN)
        BiRubricItem.update(confidence=float("nan"), weight=float("inf")).where(BiRubricItem.call_id == 14).execute()


@pytest.fixture
def store(database_url: str, backend: str) -> Iterator[Store]:
    opened = Store.open(database_url, START)
    try:
        seed_analysed(opened, CALLS, start=START, spacing=SPACING)
        seed_trackers(opened)
        _odd_calls(opened, backend)
        yield opened
    finally:
        opened.close()


@pytest.mark.slow
@pytest.mark.postgres
def test_the_output_is_byte_for_byte_what_the_export_printed_before(store: Store) -> None:
    since, until = date(1900, 1, 1), date(2026, 10, 26)
    for tz in ZONES:
        for fmt, delimiter in (("csv", ","), ("csv", ";"), ("csv", "\t"), ("jsonl", ",")):
            old, new = io.StringIO(), io.StringIO()
            expected = export_oracle.export(store, since, until, tz, fmt, old, delimiter, TRACKERS)
            written = export(store, since, until, tz, fmt, new, delimiter, TRACKERS)  # type: ignore[arg-type]
            assert written == expected == CALLS
            assert new.getvalue() == old.getvalue(), f"{fmt} {delimiter!r} in {tz}"
        short = (date(2026, 10, 25), date(2026, 10, 25))  # a period that starts inside the history
        old, new = io.StringIO(), io.StringIO()
        export_oracle.export(store, *short, tz, "csv", old, ";", TRACKERS)
        export(store, *short, tz, "csv", new, ";", TRACKERS)
        assert new.getvalue() == old.getvalue()


def _python_calls(run: Any) -> int:
    """How many Python functions `run()` calls (a count, not a clock: the same on any machine)."""
    counted = [0]

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            counted[0] += 1

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return counted[0]


@pytest.mark.slow
def test_a_row_costs_a_few_python_calls_not_a_model_per_call_and_item(tmp_path: Any) -> None:
    """The export's speed, held by a count (benchmarks/export.py has the clock): a peewee
    model per call and per rubric item, and a datetime per time, took ~400 Python calls a row
    and 3-13k rows/s."""
    store = Store.open(f"sqlite:///{tmp_path}/db.sqlite", START)
    seed_analysed(store, 2000, start=START, spacing=SPACING)
    seed_trackers(store)
    for fmt in ("csv", "jsonl"):
        calls = _python_calls(
            lambda fmt=fmt: export(store, date(2026, 10, 24), date(2026, 10, 27), UTC, fmt, io.StringIO())
        )
        # Today about 40 (CSV) and 50 (JSON Lines), most of them SQLite's text factory, one per
        # text value read (store/files.py); the models' way took about 400.
        assert calls / 2000 < 80, f"{fmt}: {calls / 2000:.0f} Python calls per row"
    store.close()


def _transitions(tz: tzinfo, first: int, last: int) -> Iterator[int]:
    """The instants where `tz` changes its offset between `first` and `last` (one a day at most)."""

    def offset(moment: int) -> timedelta | None:
        return datetime.fromtimestamp(moment, tz).utcoffset()

    for day in range(first, last, 86400):
        low, high = day, day + 86400
        if offset(low) == offset(high):
            continue
        while high - low > 1:  # the last second of the old offset
            middle = (low + high) // 2
            low, high = (middle, high) if offset(middle) == offset(day) else (low, middle)
        yield high


def test_local_times_are_what_isoformat_writes_around_every_change_of_clocks() -> None:
    for tz in [*ZONES, ZoneInfo("America/St_Johns"), ZoneInfo("Pacific/Chatham"), ZoneInfo("Africa/Monrovia")]:
        when = LocalTimes(tz)
        first = int(datetime(1880, 1, 1, tzinfo=UTC).timestamp())
        changes = list(_transitions(tz, first, first + 160 * 365 * 86400))
        moments = [t + d for t in changes for d in [*range(-7200, 7200, 61), -2, -1, 0, 1, 2]]
        moments += [OLD, 0, -1, 86399, 2**31, -(2**31)]
        for moment in moments:
            assert when(moment) == datetime.fromtimestamp(moment, tz).isoformat(sep=" "), (str(tz), moment)
