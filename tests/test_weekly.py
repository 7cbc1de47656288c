"""The weekly team report: figures from a seeded database, objections grouped by the
chat model (the real openai client against the loopback fake), the chart as a photo, sent once
a week even across restarts; and `report --week` from the command line."""

from __future__ import annotations

import struct
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from salesbot_poller.app import build_openai
from salesbot_poller.pipeline.context import Cycle
from salesbot_poller.reports import weekly
from salesbot_poller.sandbox.team import TeamCall, store_calls
from salesbot_poller.services.objection_groups import OpenAIObjectionGrouper
from salesbot_poller.store import Store, Usage
from tests.builder import Rig
from tests.conftest import CHAT_ID, Servers, run_cli
from tests.fakes import validate_telegram_html
from tests.fakes.openai_api import request_schema
from tests.loopback_app import loopback_rig

ALL_DONE = dict.fromkeys(("greeting", "needs", "presentation", "objections", "next_step", "closing"), "done")


def moment(day: int, hour: int = 12) -> int:
    """A time in November 2026 (UTC, the rig's zone)."""
    return int(datetime(2026, 11, day, hour, tzinfo=UTC).timestamp())


def verdicts(**changed: str) -> dict[str, str]:
    return ALL_DONE | changed


def seeded_calls() -> list[TeamCall]:
    """The week of 16.11 (Mon) – 22.11, and the week before it for the change."""
    ivan, maria = ("Иван Петров", 555), ("Мария Сидорова", 556)
    return [
        # The week before: Иван averaged 50.
        TeamCall(moment(10), *ivan, 100, verdicts(needs="missed", objections="missed", next_step="missed")),
        # The week: Иван 3 answered calls (4:00 of talk), scores 67 and 70 -> 68; skips objections.
        TeamCall(moment(16), *ivan, 120, verdicts(objections="missed", closing="missed"), ("Дорого",)),
        TeamCall(
            moment(17),
            *ivan,
            80,
            verdicts(objections="missed", next_step="partly", closing="not_applicable"),
            ("У конкурентов дешевле", "Я подумаю"),
        ),
        TeamCall(moment(18, 10), *ivan, phone="+79990000001", returned_by=4),  # missed, returned by the next call
        TeamCall(moment(18, 11), *ivan, 40, direction="out", phone="+79990000001"),
        # Мария: one call, 75, no earlier week; a missed call nobody returned; skips objections too.
        TeamCall(moment(19), *maria, 300, verdicts(objections="missed", needs="partly"), ("Нет бюджета",)),
        TeamCall(moment(20), *maria, phone="+79990000002"),
        # Outside the week: the Monday after (the report moment's day).
        TeamCall(moment(23), *maria, 60, verdicts(greeting="missed")),
    ]


def grouping_answer(body: dict[str, Any]) -> dict[str, Any]:
    """The fake chat model's grouping: price objections together, the rest on their own."""
    schema = request_schema(body)
    assert "groups" in (schema.get("properties") or {}), "only the grouping request is expected"
    listed = str(body["messages"][-1]["content"]).splitlines()[1:]
    price = [n for n, line in enumerate(listed, 1) if any(w in line for w in ("Дорого", "дешевле", "бюджет"))]
    other = [n for n in range(1, len(listed) + 1) if n not in price]
    return {"groups": [{"title": "Цена", "numbers": price}, {"title": "Нужно подумать", "numbers": other}]}


def weekly_rig(servers: Servers) -> Rig:
    rig = loopback_rig(servers, paced=False, telegram={"weekly_report": "mon 09:00"})
    config = rig.app.config
    rig.app.objections = OpenAIObjectionGrouper(build_openai(config), config.openai.analysis_model)
    servers.openai.analysis_fn = grouping_answer
    store_calls(rig.app.store, seeded_calls(), moment(25))
    return rig


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_report_is_due_once_its_day_and_hour_have_come() -> None:
    assert weekly.due_week("mon 09:00", moment(23, 8), UTC) is None  # Monday 08:00
    assert weekly.due_week("mon 09:00", moment(23, 9), UTC) == date(2026, 11, 16)
    assert weekly.due_week("mon 09:00", moment(28, 23), UTC) == date(2026, 11, 16)  # later that week too
    assert weekly.due_week("fri 18:00", moment(26, 12), UTC) is None  # Thursday: not this week's yet


def test_the_weekly_report_from_a_seeded_database_is_sent_once_with_its_chart(servers: Servers) -> None:
    rig = weekly_rig(servers)
    weekly.run(rig.app, Cycle(app=rig.app, now=moment(23, 8)))
    assert servers.telegram.messages == [] and servers.openai.chat_requests == []

    weekly.run(rig.app, Cycle(app=rig.app, now=moment(23, 9)))
    (message,) = servers.telegram.messages
    assert message["chat_id"] == CHAT_ID  # no alert chat configured: the default chat
    validate_telegram_html(message["text"])
    text = message["visible_text"]
    assert text.startswith("📈 Итоги недели · 16.11 – 22.11.2026")
    ivan, maria = text.split("👤 ")[1:3]
    assert ivan.startswith("Иван Петров\n📞 звонков 3 · 🕒 разговор 4:00 · ⭐ средняя 68 (▲ 18)\n")
    assert "🔴 пропущено 1, перезвонили 1\n📉 Слабое место: Работа с возражениями (0%)" in ivan
    assert maria.startswith("Мария Сидорова\n📞 звонков 1 · 🕒 разговор 5:00 · ⭐ средняя 75\n")
    assert "🔴 пропущено 1, перезвонили 0" in maria
    assert "пропускают 2 из 2 менеджеров: Работа с возражениями" in text
    assert "Частые возражения клиентов (всего 4)\n• Цена — 3\n• Нужно подумать — 1" in text

    # One grouping request with the week's four objections; its tokens are recorded.
    (request,) = servers.openai.chat_requests
    assert "4. Нет бюджета" in request["messages"][-1]["content"]
    (usage,) = Usage.select().where(Usage.kind == "objections")
    assert usage.input_tokens > 0 and usage.output_tokens > 0

    (photo,) = servers.telegram.photos
    assert photo["chat_id"] == CHAT_ID and "по неделям" in photo["caption"]
    assert png_size(photo["bytes"]) == (1200, 675)
    assert 10_000 < len(photo["bytes"]) < 1_000_000

    weekly.run(rig.app, Cycle(app=rig.app, now=moment(23, 10)))  # later that day
    rig.app.store.close()
    rig.app.store = Store.open(rig.app.config.storage.database, moment(24))  # a restart: the same database
    weekly.run(rig.app, Cycle(app=rig.app, now=moment(24)))
    assert len(servers.telegram.messages) == 1 and len(servers.telegram.photos) == 1
    assert len(servers.openai.chat_requests) == 1


def test_a_failed_grouping_still_sends_the_report_with_identical_objections_counted(servers: Servers) -> None:
    rig = weekly_rig(servers)
    servers.openai.analysis_fn = lambda body: "not json"
    weekly.run(rig.app, Cycle(app=rig.app, now=moment(23, 9)))
    (message,) = servers.telegram.messages
    assert "• Дорого — 1" in message["visible_text"]
    assert len(servers.telegram.photos) == 1


@pytest.mark.slow
def test_report_command_prints_a_past_week_and_writes_its_chart(servers: Servers, tmp_path: Path) -> None:
    config = servers.write_config()
    store = Store.open(f"sqlite:///{servers.tmp}/state/salesbot.db", moment(25))
    store_calls(store, seeded_calls(), moment(25))
    store.close()
    servers.openai.analysis_fn = grouping_answer
    chart = tmp_path / "chart.png"
    result = run_cli("report", "--week", "2026-11-18", "--dry-run", "--chart", str(chart), config=config)
    assert result.returncode == 0, result.stderr
    assert "--- dry run: weekly -> default chat" in result.stdout
    assert "Итоги недели · 16.11 – 22.11.2026" in result.stdout, "as the chat shows it"
    assert "<b>" not in result.stdout and "&lt;" not in result.stdout and "&amp;" not in result.stdout
    assert "\n[photo (PNG, " in result.stdout  # the chart: one line with its caption
    assert png_size(chart.read_bytes()) == (1200, 675)
    assert servers.telegram.messages == [] and servers.telegram.photos == []

    future = run_cli("report", "--week", "2099-01-05", config=config)
    assert future.returncode == 2 and "not over yet" in future.stderr


@pytest.mark.slow
def test_the_weekly_demo_prints_the_report_of_demo_data_as_text_and_writes_its_chart(tmp_path: Path) -> None:
    chart = tmp_path / "chart.png"
    result = run_cli("demo", "--weekly", "--chart", str(chart))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "Итоги недели · " in text and "<b>" not in text and "&lt;" not in text and "&amp;" not in text
    assert text.count("👤 ") == 4 and "• Цена и бюджет — " in text  # grouped by the OpenAI sandbox
    assert "\n[photo (PNG, " in text and png_size(chart.read_bytes()) == (1200, 675)


@pytest.mark.slow
def test_the_weekly_demo_of_a_given_day_shows_each_managers_change() -> None:
    from salesbot_poller.cli.demo_weekly import run_weekly_demo

    lines: list[str] = []
    assert run_weekly_demo(lines.append, None, lambda: datetime(2026, 12, 2, 10, tzinfo=UTC)) == 0
    text = "\n".join(lines)
    assert "Итоги недели · 23.11 – 29.11.2026" in text
    assert text.count("👤 ") == 4 and "(▲ " in text and "(▼ " in text


def test_the_team_misses_line_agrees_in_number() -> None:
    from salesbot_poller.reports.weekly import _skip_text

    assert _skip_text(1, 1) == "пропускает 1 из 1 менеджера"
    assert _skip_text(2, 5) == "пропускают 2 из 5 менеджеров"
    assert _skip_text(11, 21) == "пропускают 11 из 21 менеджера"
    assert _skip_text(21, 111) == "пропускает 21 из 111 менеджеров"
