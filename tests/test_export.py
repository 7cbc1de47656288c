"""`salesbot-poller export`: one row per analysed call of a period (days in the
account's zone), as Excel-ready CSV or JSON Lines, streamed in flat memory."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from salesbot_poller.cli.export import default_delimiter, export
from salesbot_poller.store import Store
from salesbot_poller.store.models import BiCall
from tests.bi_seed import seed_analysed, seed_trackers
from tests.conftest import run_cli

DAY = 24 * 3600
MOSCOW = ZoneInfo("Europe/Moscow")
START = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp())  # a Monday, 00:00 UTC


def seeded(tmp_path: Path, count: int, spacing: int = 3600) -> Store:
    store = Store.open(f"sqlite:///{tmp_path}/db.sqlite", START)
    seed_analysed(store, count, start=START, spacing=spacing)
    return store


def test_csv_starts_with_a_bom_and_has_one_row_per_call_with_its_items_and_next_step(tmp_path: Path) -> None:
    store = seeded(tmp_path, 48)  # two days, one call an hour
    out = io.StringIO()
    written = export(store, date(2026, 11, 2), date(2026, 11, 2), UTC, "csv", out)
    text = out.getvalue()
    assert written == 24 and text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))
    assert len(rows) == 24
    first = rows[0]
    assert list(first)[-4:] == ["item:greeting", "item:needs", "item:offer", "item:close"]
    assert (first["call_id"], first["started_at"], first["manager"]) == (
        "1",
        "2026-11-02 00:00:00+00:00",
        "Иван Петров",
    )
    assert (first["score"], first["next_step_action"], first["next_step_due"]) == (
        "0",
        "Перезвонить; КП №0",
        "2026-12-01",
    )
    assert (first["item:greeting"], first["item:needs"], first["objections"]) == ("done", "done", "Дорого | Подумаю")
    assert first["topic"] == "цена"  # the BI table's topic, so a spreadsheet groups by it too
    assert rows[1]["next_step_action"] == "" and rows[1]["next_step_due"] == "" and rows[1]["objections"] == ""
    store.close()


def test_jsonl_carries_every_item_and_objection_in_full(tmp_path: Path) -> None:
    store = seeded(tmp_path, 3)
    out = io.StringIO()
    assert export(store, date(2026, 11, 2), date(2026, 11, 2), UTC, "jsonl", out) == 3
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["call_id"] for line in lines] == [1, 2, 3]
    items = lines[0]["items"]
    assert [i["item_id"] for i in items] == ["greeting", "needs", "offer", "close"]
    assert items[0] == {
        "item_id": "greeting",
        "title": "Приветствие",
        "weight": 1.0,
        "verdict": "done",
        "evidence": "цитата 0-0",
        "verified": False,
        "confidence": 0.8,
        "at": 0,
    }
    assert lines[0]["objections"] == [
        {"objection": "Дорого", "handling": "Предложил рассрочку"},
        {"objection": "Подумаю", "handling": ""},
    ]
    assert not out.getvalue().startswith("\ufeff"), "no BOM in JSON Lines"
    store.close()


def test_days_are_the_accounts_days(tmp_path: Path) -> None:
    store = seeded(tmp_path, 48)  # 00:00 UTC Nov 2 .. 23:00 UTC Nov 3
    out = io.StringIO()
    # Nov 2 in Moscow (UTC+3) is 21:00 UTC Nov 1 .. 21:00 UTC Nov 2: the calls of 00:00..20:00 UTC.
    assert export(store, date(2026, 11, 2), date(2026, 11, 2), MOSCOW, "jsonl", out) == 21
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["started_at"] == "2026-11-02 03:00:00+03:00" and lines[-1]["started_at"].startswith(
        "2026-11-02 23:"
    )
    store.close()


class Sink(io.StringIO):
    """Counts what is written and keeps none of it."""

    size = 0

    def write(self, text: str) -> int:
        self.size += len(text)
        return len(text)


def peak_of_export(store: Store, until: date, fmt: str) -> tuple[int, int]:
    sink = Sink()
    tracemalloc.start()
    try:
        written = export(store, date(2026, 11, 2), until, UTC, fmt, sink)  # type: ignore[arg-type]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return written, peak


@pytest.mark.slow
def test_exporting_ten_times_the_calls_takes_no_more_memory(tmp_path: Path) -> None:
    store = seeded(tmp_path, 10_000, spacing=86)  # about 1,000 calls a day for ten days
    for fmt in ("csv", "jsonl"):
        small, small_peak = peak_of_export(store, date(2026, 11, 2), fmt)
        large, large_peak = peak_of_export(store, date(2026, 11, 11), fmt)
        assert 1000 <= small < 1010 and large == 10_000  # a call every 86 s
        # Linear growth would be ~10x; a page at a time keeps it flat (slack for the allocator).
        print(f"{fmt}: peak {small_peak} B for {small} calls, {large_peak} B for {large}")
        assert large_peak < 1.5 * small_peak, f"{fmt}: peak {small_peak} B for 1,000 calls, {large_peak} B for 10,000"
    store.close()


@pytest.mark.slow
def test_the_command_writes_stdout_or_a_file_and_names_a_bad_day(tmp_path: Path) -> None:
    store = seeded(tmp_path, 5)
    store.close()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[amocrm]\ntimezone = "Europe/Moscow"\n[storage]\ndatabase = "sqlite:///{tmp_path}/db.sqlite"\n'
        f'audio_dir = "{tmp_path}/audio"\n'
    )
    result = run_cli("export", "--since", "2026-11-02", "--until", "2026-11-02", config=config)
    assert result.returncode == 0, result.stderr
    # A Russian zone: Russian Excel splits columns at ";".
    assert result.stdout.startswith("\ufeffcall_id;started_at;") and result.stdout.count("\n") == 6
    assert "2026-11-02 03:00:00+03:00" in result.stdout and "export: 5 call(s)" in result.stderr
    target = tmp_path / "calls.jsonl"
    result = run_cli("export", "--since", "2026-11-02", "--format", "jsonl", "--output", str(target), config=config)
    assert result.returncode == 0 and result.stdout == ""
    assert len(target.read_text(encoding="utf-8").splitlines()) == 5 and not (tmp_path / "calls.jsonl.part").exists()
    comma = run_cli("export", "--since", "2026-11-02", "--delimiter", ",", "--until", "9999-12-31", config=config)
    assert comma.returncode == 0 and comma.stdout.startswith("\ufeffcall_id,started_at,"), comma.stderr
    assert "export: 5 call(s) from 2026-11-02 to 9999-12-31" in comma.stderr
    bad = run_cli("export", "--since", "2.11.2026", config=config)
    assert bad.returncode == 2 and bad.stderr.strip().endswith(
        "--since: expected a day like 2026-11-01, got '2.11.2026'"
    )


def test_text_a_spreadsheet_would_run_is_quoted_in_csv_and_raw_in_jsonl(tmp_path: Path) -> None:
    store = seeded(tmp_path, 6)
    hostile = ['=HYPERLINK("http://x";"y")', "+7 999", "-1+cmd|' /C calc'!A0", "@SUM(A1)", "\tTab", "\rCR"]
    for call_id, text in enumerate(hostile, start=1):
        BiCall.update(manager=text, next_step_action=text).where(BiCall.call_id == call_id).execute()
    out = io.StringIO()
    assert export(store, date(2026, 11, 2), date(2026, 11, 2), UTC, "csv", out) == 6
    rows = list(csv.DictReader(io.StringIO(out.getvalue().removeprefix("\ufeff"))))
    assert [row["manager"] for row in rows] == ["'" + text for text in hostile]
    assert [row["next_step_action"] for row in rows] == ["'" + text for text in hostile]
    assert rows[0]["score"] == "0" and rows[0]["call_id"] == "1", "numbers stay numbers"
    raw = io.StringIO()
    export(store, date(2026, 11, 2), date(2026, 11, 2), UTC, "jsonl", raw)
    assert [json.loads(line)["manager"] for line in raw.getvalue().splitlines()] == hostile
    store.close()


def test_the_last_day_there_is_reads_as_until_the_end(tmp_path: Path) -> None:
    store = seeded(tmp_path, 3)
    for tz in (UTC, MOSCOW):
        assert export(store, date(2026, 11, 2), date.max, tz, "jsonl", io.StringIO()) == 3
        assert export(store, date.min, date.max, tz, "jsonl", io.StringIO()) == 3
    store.close()


def test_stored_text_that_is_not_utf8_is_exported_with_replacement_characters(tmp_path: Path) -> None:
    store = seeded(tmp_path, 2)
    store.db.execute_sql("UPDATE bi_call SET manager = CAST(X'49d0b2d0b0ff' AS TEXT) WHERE call_id = 1")
    out = io.StringIO()
    assert export(store, date(2026, 11, 2), date(2026, 11, 2), UTC, "csv", out) == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue().removeprefix("\ufeff"))))
    assert rows[0]["manager"] == "Iва\ufffd" and rows[1]["manager"] == "Мария Сидорова"
    store.close()


def test_the_default_delimiter_follows_the_zone_and_the_locale() -> None:
    assert default_delimiter("Europe/Moscow", {"LANG": "en_US.UTF-8"}) == ";"
    assert default_delimiter("Asia/Novosibirsk", {}) == ";"
    assert default_delimiter("Europe/Berlin", {"LANG": "ru_RU.UTF-8"}) == ";"
    assert default_delimiter("Europe/Berlin", {"LC_ALL": "de_DE.UTF-8", "LANG": "ru_RU.UTF-8"}) == ","
    assert default_delimiter("", {"LANG": "C.UTF-8"}) == ","


def test_each_configured_tracker_is_a_column_of_hit_counts_and_jsonl_carries_them(tmp_path: Path) -> None:
    store = seeded(tmp_path, 6)
    seed_trackers(store)  # call 4: Конкурент; call 5: Скидка x2
    out = io.StringIO()
    export(store, date(2026, 11, 2), date(2026, 11, 2), UTC, "csv", out, trackers=["Конкурент", "Скидка", "Нет такого"])
    rows = list(csv.DictReader(io.StringIO(out.getvalue().removeprefix("\ufeff"))))
    assert list(rows[0])[-3:] == ["tracker:Конкурент", "tracker:Скидка", "tracker:Нет такого"]
    counts = {
        row["call_id"]: (row["tracker:Конкурент"], row["tracker:Скидка"], row["tracker:Нет такого"]) for row in rows
    }
    assert counts["4"] == ("1", "0", "0") and counts["5"] == ("0", "2", "0") and counts["1"] == ("0", "0", "0")
    lines = io.StringIO()
    export(store, date(2026, 11, 2), date(2026, 11, 2), UTC, "jsonl", lines, trackers=["Конкурент"])
    by_id = {row["call_id"]: row for row in map(json.loads, lines.getvalue().splitlines())}
    assert by_id[5]["trackers"] == {"Скидка": 2} and by_id[1]["trackers"] == {}
    assert by_id[1]["tracker_missing"] == 0
    store.close()
