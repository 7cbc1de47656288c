"""Topics from a closed list (`analysis.topics`): the answer schema's enum and the prompt,
an answer off the list stored as a listed name or "Другое", the card's hashtag, the reports'
topic block, the BI column, and what `forget` keeps: a listed topic, never a free one."""

from __future__ import annotations

import json
import time
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from salesbot_poller.app import build_analyzer, build_openai
from salesbot_poller.config import parse_config
from salesbot_poller.domain import CallAnalysis, CallContext, without_personal_data
from salesbot_poller.errors import ConfigError
from salesbot_poller.pipeline import retention
from salesbot_poller.pipeline.messages import hashtag, render_conversation
from salesbot_poller.reports import bot_answers, digest, weekly
from salesbot_poller.reports.topics import topic_block
from salesbot_poller.services.analysis import OpenAIAnalyzer
from salesbot_poller.store import BiCall, Call, Migration, Store
from tests.builder import T0, build_rig
from tests.conftest import Servers, run_cli
from tests.loopback_app import loopback_rig
from tests.test_analysis import CONTEXT, answers, good_answer
from tests.test_end_to_end import seed

TOPICS = ["Поставка", "Монтаж окон", "Рекламация"]
NOW = int(T0.timestamp())


def analyzer(servers: Servers, **kwargs: Any) -> OpenAIAnalyzer:
    config = loopback_rig(servers).app.config
    return OpenAIAnalyzer(build_openai(config), "gpt-4o-mini", **kwargs)


def topic_schema(servers: Servers, request: int = 0) -> dict[str, Any]:
    schema = servers.openai.chat_requests[request]["response_format"]["json_schema"]
    assert schema["strict"] is True
    return dict(schema["schema"]["properties"]["topic"])


# --- the answer schema and the stored topic (the real client, the fake OpenAI server) -------


def test_a_closed_list_makes_the_topic_an_enum_with_other_and_the_prompt_names_it(servers: Servers) -> None:
    result = analyzer(servers, topics=TOPICS).analyse("Менеджер: Добрый день!", CONTEXT)
    assert topic_schema(servers)["enum"] == [*TOPICS, "Другое"]
    system = servers.openai.chat_requests[0]["messages"][0]["content"]
    assert "«Поставка», «Монтаж окон», «Рекламация», «Другое»" in system
    # The fake answers "поставка": the listed name, as the list spells it.
    assert (result.topic, result.topic_closed, result.problems) == ("Поставка", True, [])


def test_an_answer_off_the_list_is_stored_as_a_listed_name_or_other(servers: Servers) -> None:
    servers.openai.analysis_fn = answers(
        good_answer() | {"topic": "доставка окон"},
        good_answer() | {"topic": "  МОНТАЖ   ОКОН "},
        good_answer() | {"topic": "рекламация"},
    )
    off = analyzer(servers, topics=TOPICS)
    first, second, third = (off.analyse("text", CONTEXT) for _ in range(3))
    assert (first.topic, first.topic_closed) == ("Другое", True)
    assert first.problems == ["topic 'доставка окон' is not in analysis.topics: Другое"]
    assert (second.topic, second.problems) == ("Монтаж окон", [])
    assert third.topic == "Рекламация"


def test_a_list_naming_other_itself_is_not_given_it_twice(servers: Servers) -> None:
    servers.openai.analysis_fn = answers(good_answer() | {"topic": "гарантия"})
    result = analyzer(servers, topics=["Поставка", "другое"]).analyse("text", CONTEXT)
    assert topic_schema(servers)["enum"] == ["Поставка", "другое"]
    assert result.topic == "другое"


def test_without_a_list_the_topic_is_the_models_own_words(servers: Servers) -> None:
    result = analyzer(servers).analyse("text", CONTEXT)
    schema = topic_schema(servers)
    assert schema["type"] == "string" and "enum" not in schema
    assert "Другое" not in servers.openai.chat_requests[0]["messages"][0]["content"]
    assert (result.topic, result.topic_closed) == ("поставка", False)


def test_a_profile_may_bring_its_own_list_or_free_the_topic(servers: Servers) -> None:
    profiles = [
        {"name": "Монтаж", "users": [555], "topics": ["Замер", "Монтаж"]},
        {"name": "Свободная", "users": [556], "topics": []},
        {"name": "Общая", "users": [557]},
    ]
    raw = tomllib.loads(servers.config_text()) | {"analysis": {"topics": TOPICS}, "profiles": profiles}
    config = parse_config(raw, {})
    client = build_openai(config)
    for profile in config.profiles:
        build_analyzer(config, client, profile=profile).analyse("text", CONTEXT)
    build_analyzer(config, client).analyse("text", CONTEXT)
    enums = [topic_schema(servers, n).get("enum") for n in range(4)]
    assert enums == [["Замер", "Монтаж", "Другое"], None, [*TOPICS, "Другое"], [*TOPICS, "Другое"]]


# --- the config ------------------------------------------------------------------------------


def test_a_bad_topic_list_is_named_by_its_key_and_position() -> None:
    raw: dict[str, Any] = {
        "analysis": {"topics": ["Поставка", " ", "x" * 61, "поставка"]},
        "profiles": [{"name": "p", "topics": ["a"] * 2}, {"name": "q", "topics": [f"t{n}" for n in range(51)]}],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {}, require_secrets=False)
    text = "\n".join(caught.value.problems)
    for line in (
        "analysis.topics[2]: a topic must not be blank",
        "analysis.topics[3]: a topic is at most 60 characters, got 61",
        "profiles[1].topics: topic 2 'a' repeats topic 1 (case is ignored)",
        "profiles[2].topics: at most 50 topics, got 51",
    ):
        assert line in text, text
    raw = {"analysis": {"topics": ["Поставка", "ПОСТАВКА"]}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {}, require_secrets=False)
    assert "analysis.topics: topic 2 'ПОСТАВКА' repeats topic 1 (case is ignored)" in caught.value.problems[0]


# --- the card and the reports ------------------------------------------------------------------


def test_the_cards_hashtag_is_the_listed_name_and_a_free_topic_stays_lowercased() -> None:
    assert hashtag("Монтаж окон", closed=True) == "#Монтаж_окон"
    assert hashtag("Другое", closed=True) == "#Другое"
    assert hashtag("Доставка окон") == "#доставка_окон"
    closed = CallAnalysis(summary="s", topic="Монтаж окон", topic_closed=True, score=80)
    ctx = CallContext("in", "Иван", "leads", "ООО", "https://x/1", "+7", 125, NOW)
    assert "#Монтаж_окон" in render_conversation(ctx, closed)[0]


def add(store: Store, n: int, topic: str, closed: bool, score: int | None, at: int = NOW - 3600) -> None:
    row = Call.create(
        event_id=f"t-{n}",
        direction="in",
        entity_type="leads",
        entity_id=9000 + n,
        note_id=9000 + n,
        event_created_at=at,
        first_seen_at=at,
        updated_at=at,
        stage="notified",
        kind="conversation",
        duration=120,
        call_status=4,
        manager_name="Иван Петров",
        phone="+79991110001",
    )
    analysis = CallAnalysis(summary="s", topic=topic, topic_closed=closed, score=score)
    store.update(row, at, analysis_json=analysis.model_dump_json())


@pytest.mark.postgres
def test_reports_and_bi_group_by_the_listed_name_exactly(tmp_path: Path, database_url: str) -> None:
    rig = build_rig(tmp_path, storage={"database": database_url}, analysis={"topics": TOPICS})
    app = rig.app
    add(app.store, 1, "Поставка", True, 80)
    add(app.store, 2, "Поставка", True, 60)
    add(app.store, 3, "Другое", True, None)
    add(app.store, 4, "поставка", False, 10)  # analysed before the list was set: not counted
    add(app.store, 5, "Монтаж окон", True, 90, at=NOW - 40 * 24 * 3600)  # another period
    assert [(r.topic, r.calls, r.scored_calls) for r in app.store.topic_totals(NOW - 7 * 86400, NOW)] == [
        ("Поставка", 2, 2),
        ("Другое", 1, 0),
    ]
    block = "🗂 <b>По темам</b>\nПоставка: 2 · ⭐ 70\nДругое: 1"
    assert topic_block(app, NOW - 7 * 86400, NOW) == block
    assert block in "\n".join(bot_answers.answer(app, "stats", [], NOW).parts)
    assert block in "\n".join(bot_answers.answer(app, "stats", ["7d"], NOW).parts)
    assert "По темам" not in "\n".join(bot_answers.answer(app, "stats", ["Иван"], NOW).parts)
    parts = digest.render_digest([], NOW - 86400, NOW, None, topics=topic_block(app, NOW - 86400, NOW))
    assert block in "\n".join(parts)
    monday = (T0 - timedelta(days=T0.weekday())).date()
    week = weekly.plan_week(app, monday, NOW, "weekly:test")[0].payload["parts"]
    assert "По темам" in "\n".join(week)
    topics = {row.call_id: (row.topic, row.topic_closed) for row in BiCall.select()}
    assert sorted(topics.values()) == sorted(
        [("Поставка", True), ("Поставка", True), ("Другое", True), ("поставка", False), ("Монтаж окон", True)]
    )


def test_without_a_list_the_reports_have_no_topic_block(tmp_path: Path) -> None:
    app = build_rig(tmp_path).app
    add(app.store, 1, "поставка", False, 80)
    assert topic_block(app, NOW - 86400, NOW) is None
    assert "По темам" not in "\n".join(bot_answers.answer(app, "stats", [], NOW).parts)


# --- what the removal of personal data keeps -----------------------------------------------------


def test_personal_data_removal_keeps_a_listed_topic_and_blanks_a_free_one() -> None:
    closed = CallAnalysis(summary="s", topic="Рекламация", topic_closed=True, score=1).model_dump_json()
    free = CallAnalysis(summary="s", topic="Иванов из Казани", score=1).model_dump_json()
    assert json.loads(without_personal_data(closed) or "")["topic"] == "Рекламация"
    assert json.loads(without_personal_data(free) or "")["topic"] == ""


def test_retention_keeps_a_listed_topic_and_blanks_a_free_one(tmp_path: Path) -> None:
    app = build_rig(tmp_path, analysis={"topics": TOPICS}).app
    add(app.store, 1, "Рекламация", True, 40, at=NOW - 200 * 86400)
    add(app.store, 2, "Иванов из Казани", False, 40, at=NOW - 200 * 86400)
    done = retention.clear_before(app, NOW - 180 * 86400, NOW)
    assert done is not None and done.calls == 2
    stored = {c.event_id: CallAnalysis.model_validate_json(c.analysis_json or "").topic for c in Call.select()}
    assert stored == {"t-1": "Рекламация", "t-2": ""}
    assert sorted(row.topic for row in BiCall.select()) == ["", "Рекламация"]


def with_topics(servers: Servers, topics: list[str] | None) -> Path:
    path = servers.write_config()
    if topics is not None:
        path.write_text(path.read_text() + f"\n[analysis]\ntopics = {json.dumps(topics, ensure_ascii=False)}\n")
    return path


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("topics", [TOPICS, None], ids=["closed", "free"])
def test_a_closed_list_topic_survives_forget_a_free_one_does_not(servers: Servers, topics: list[str] | None) -> None:
    seed(servers, int(time.time()))
    config = with_topics(servers, topics)
    assert run_cli("once", config=config).returncode == 0
    forgot = run_cli("forget", "--phone", "+7 999 111-00-01", "--yes", config=config)
    assert forgot.returncode == 0, forgot.stderr
    store = Store.open(servers.database, int(time.time()))
    try:
        (call,) = Call.select().where(Call.note_id == 101)
        (other,) = Call.select().where(Call.note_id == 102)  # another number: untouched
        assert call.personal_removed_at is not None and call.transcript is None
        kept = CallAnalysis.model_validate_json(call.analysis_json or "")
        fact = BiCall.get(BiCall.call_id == call.id)
        other_fact = BiCall.get(BiCall.call_id == other.id)
    finally:
        store.close()
    expected = ("Поставка", True) if topics else ("", False)
    assert (kept.topic, kept.topic_closed) == expected
    assert (fact.topic, fact.topic_closed) == expected
    assert other_fact.topic == ("Поставка" if topics else "поставка")


# --- the upgrade ---------------------------------------------------------------------------------


@pytest.mark.postgres
def test_the_upgrade_fills_the_topic_column_and_blanks_free_topics_already_forgotten(database_url: str) -> None:
    from tests.test_migrations import back_to

    store = Store.open(database_url, NOW)
    try:
        add(store, 1, "поставка", False, 50)
        add(store, 2, "Иванов из Казани", False, 50)
        Call.update(personal_removed_at=NOW).where(Call.event_id == "t-2").execute()  # forgotten before 0019
        back_to(store, "0018_trackers")
        assert store.migrate(NOW + 1, upto="0019_topics") == ["0019_topics"]
        assert Migration.get_or_none(Migration.name == "0019_topics") is not None
        topics = {row.call_id: row.topic for row in BiCall.select()}
        analyses = {c.event_id: CallAnalysis.model_validate_json(c.analysis_json or "").topic for c in Call.select()}
    finally:
        store.close()
    assert sorted(topics.values()) == ["", "поставка"]
    assert analyses == {"t-1": "поставка", "t-2": ""}
