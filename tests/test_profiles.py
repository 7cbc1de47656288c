"""Call profiles through the real command line against loopback amoCRM, OpenAI,
Telegram and recording servers: two pipelines, two user groups and an internal number."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from salesbot_poller.config import Config, parse_config
from salesbot_poller.errors import ConfigError
from salesbot_poller.pipeline.profiles import CallFacts, match
from tests.conftest import CHAT_ID, Servers, run_cli
from tests.fakes import make_mp3

WHOLESALE_CHAT = "-1002222222222"
OFFICE = "+7 (495) 123-45-67"
PROFILES = f"""
[[profiles]]
name = "Опт"
pipelines = [2002]
chat_id = "{WHOLESALE_CHAT}"
min_duration_seconds = 20
rubric = [ {{ id = "price", title = "Назвал цену", done_when = "цена прозвучала" }},
           {{ id = "volume", title = "Уточнил объём" }} ]

[[profiles]]
name = "Продажи"
groups = [10]
missed_calls = true
"""


def account(servers: Servers) -> None:
    amo = servers.amo
    amo.add_pipeline(1001, "Розница", {11: "Новая заявка", 12: "Переговоры"})
    amo.add_pipeline(2002, "Опт", {21: "Первичный контакт"})
    amo.add_group(10, "Отдел продаж")
    amo.add_group(20, "Поддержка")
    amo.add_user(555, "Ольга Смирнова", group_id=10)
    amo.add_user(556, "Пётр Саппортов", group_id=20)
    amo.add_entity("lead", 7001, "Квартира на Ленина", 555, pipeline_id=1001, status_id=11)
    amo.add_entity("lead", 7002, "ООО Стройопт", 555, pipeline_id=2002, status_id=21)
    amo.add_entity("contact", 8001, "Иван (поддержка)", 556)
    servers.telegram.known_chats |= {WHOLESALE_CHAT}


def add_calls(servers: Servers) -> None:
    now = int(time.time())
    rec, amo = servers.recordings, servers.amo

    def answered(note_id: int, entity: str, entity_id: int, user: int, phone: str, seconds: int = 60) -> None:
        link = rec.add(f"/rec-{note_id}.mp3", make_mp3(2.0))
        amo.add_call(entity_type=entity, entity_id=entity_id, note_id=note_id, duration=seconds, phone=phone,
                     link=link, created_at=now - 400 + note_id % 100, responsible_user_id=user)  # fmt: skip

    answered(101, "lead", 7001, 555, "+79161110001")  # retail lead, sales group -> «Продажи»
    answered(102, "lead", 7002, 555, "+79161110002")  # wholesale pipeline -> «Опт» (first match)
    answered(103, "contact", 8001, 556, "+79161110003")  # support group -> no profile
    answered(104, "lead", 7001, 555, OFFICE)  # the office line -> excluded
    answered(105, "lead", 7002, 555, "+79161110005", seconds=15)  # wholesale, under its 20 s
    amo.add_call(entity_type="contact", entity_id=8001, note_id=106, duration=0, phone="+79161110006",
                 link=None, call_status=6, created_at=now - 250, responsible_user_id=556)  # fmt: skip


def write_config(servers: Servers, profiles: str = PROFILES) -> Path:
    path = servers.write_config(exclude_phones=["84951234567"])
    path.write_text(path.read_text() + profiles)
    return path


def rubric_ids(request: dict[str, Any]) -> list[str]:
    schema = request["response_format"]["json_schema"]["schema"]
    rubric = schema["properties"]["rubric"]
    if "$ref" in rubric:
        rubric = schema["$defs"][rubric["$ref"].rsplit("/", 1)[1]]
    return list(rubric["properties"])


@pytest.mark.slow
def test_calls_land_in_their_profile_and_the_others_are_never_downloaded(servers: Servers) -> None:
    account(servers)
    add_calls(servers)
    config = write_config(servers)

    result = run_cli("once", config=config)

    assert result.returncode == 0, result.stderr
    downloaded = sorted(r.path for r in servers.recordings.requests if r.method == "GET")
    assert downloaded == ["/rec-101.mp3", "/rec-102.mp3"], "unmatched, excluded and too-short calls cost nothing"
    db = sqlite3.connect(servers.tmp / "state" / "salesbot.db")
    rows = dict(db.execute("SELECT note_id, stage || '|' || coalesce(profile, '') || '|' || "
                           "coalesce(skip_reason, '') FROM call").fetchall())  # fmt: skip
    assert rows[101] == "notified|Продажи|"
    assert rows[102] == "notified|Опт|"
    assert rows[103] == "skipped||no profile"
    assert rows[104] == "skipped||excluded number (poller.exclude_phones)"
    assert rows[105] == "skipped||too short (15 s < 20 s, profile «Опт»)"
    assert rows[106] == "skipped||no profile", "a missed call no profile matches is not alerted"
    # Each profile's rubric is what the model is asked.
    asked = sorted(rubric_ids(r) for r in servers.openai.chat_requests)
    assert asked == [["greeting", "needs", "presentation", "objections", "next_step", "closing"], ["price", "volume"]]
    # Each card goes to its profile's chat, and names its profile.
    cards = {m["chat_id"]: m["text"] for m in servers.telegram.messages}
    assert set(cards) == {CHAT_ID, WHOLESALE_CHAT}
    print(cards[WHOLESALE_CHAT], cards[CHAT_ID], sep="\n\n")  # for the closing note (pytest -s)
    assert "📋 Профиль: <b>Опт</b>" in cards[WHOLESALE_CHAT] and "Назвал цену" in cards[WHOLESALE_CHAT]
    assert "📋 Профиль: <b>Продажи</b>" in cards[CHAT_ID] and "Приветствие и представление" in cards[CHAT_ID]
    # Only the pipelines' lead request was added: one for names and pipelines together.
    assert servers.amo.count(r"/api/v4/leads$", "GET") == 1

    status = run_cli("status", config=config)
    assert "calls per profile:" in status.stdout
    assert "«Опт»: 1 (notified 1)" in status.stdout and "«Продажи»: 1 (notified 1)" in status.stdout


@pytest.mark.slow
def test_a_missed_call_of_a_profile_is_alerted_and_one_with_alerts_off_is_not(servers: Servers) -> None:
    account(servers)
    now = int(time.time())
    for note_id, user in ((201, 555), (202, 556)):
        servers.amo.add_call(entity_type="lead", entity_id=7001, note_id=note_id, duration=0,
                             phone=f"+7916222000{note_id % 10}", link=None, call_status=6,
                             created_at=now - 300 + note_id % 10, responsible_user_id=user)  # fmt: skip
    quiet = PROFILES.replace("missed_calls = true", "missed_calls = false") + '\n[[profiles]]\nname = "Все"\n'
    result = run_cli("once", config=write_config(servers, quiet))
    assert result.returncode == 0, result.stderr
    db = sqlite3.connect(servers.tmp / "state" / "salesbot.db")
    rows = dict(db.execute("SELECT note_id, stage || '|' || coalesce(skip_reason, '') FROM call").fetchall())
    assert rows[201] == "skipped|missed-call alerts off in profile «Продажи»"
    assert rows[202] == "missed_alerted|", "the catch-all profile alerts it"
    assert len(servers.telegram.messages) == 1 and "+7 916 222-00-02" in servers.telegram.messages[0]["text"]


@pytest.mark.slow
def test_check_names_an_id_the_account_does_not_have(servers: Servers) -> None:
    account(servers)
    bad = PROFILES.replace("pipelines = [2002]", "pipelines = [999]").replace("groups = [10]", "groups = [10, 77]")
    result = run_cli("check", config=write_config(servers, bad))
    assert result.returncode == 1
    assert (
        "profiles[1].pipelines: 999 is not a pipeline of this account; pipelines: 1001 «Розница», 2002 «Опт»"
        in result.stdout
    )
    assert "profiles[2].groups: 77 is not a user group of this account; groups: 10 «Отдел продаж», 20 «Поддержка»" in (
        result.stdout
    )
    good = run_cli("check", config=write_config(servers))
    assert "profiles: ok (2: «Опт», «Продажи»" in good.stdout


@pytest.mark.slow
def test_profiles_prints_the_accounts_ids(servers: Servers) -> None:
    account(servers)
    result = run_cli("profiles", config=servers.write_config())
    assert result.returncode == 0, result.stderr
    print(result.stdout)  # for the closing note (pytest -s)
    lines = result.stdout.splitlines()
    assert "  1001  «Розница»" in lines and "      status 11  «Новая заявка»" in lines
    assert "  2002  «Опт»" in lines and "  20  «Поддержка»" in lines
    assert "  555  Ольга Смирнова, group 10 «Отдел продаж»" in lines


# --- matching, in memory ---------------------------------------------------------------------


def config_with(profiles: list[dict[str, Any]], **poller: Any) -> Config:
    return parse_config({"profiles": profiles, "poller": poller}, {}, require_secrets=False)


def facts(**overrides: Any) -> CallFacts:
    base: dict[str, Any] = {"entity_type": "leads", "direction": "in", "duration": 90, "answered": True,
                            "user_id": 555, "group_id": 10, "pipeline_id": 1001, "status_id": 11}  # fmt: skip
    return CallFacts(**(base | overrides))


def test_the_first_matching_profile_wins_and_every_filter_counts() -> None:
    config = config_with([
        {"name": "A", "statuses": [12]},
        {"name": "B", "users": [555], "directions": ["out"]},
        {"name": "C", "sources": ["Mango"], "max_duration_seconds": 120, "min_duration_seconds": 100},
        {"name": "D", "entities": ["contacts"]},
    ])  # fmt: skip
    assert match(config, facts())[1] == "no profile"
    assert match(config, facts(status_id=12))[0].name == "A"  # type: ignore[union-attr]
    assert match(config, facts(direction="out"))[0].name == "B"  # type: ignore[union-attr]
    assert match(config, facts(source="mango", duration=110))[0].name == "C"  # type: ignore[union-attr]
    assert match(config, facts(source="mango", duration=300)) == (None, "too long (300 s > 120 s, profile «C»)")
    assert match(config, facts(source="mango", duration=60, entity_type="contacts", pipeline_id=None)) == (
        None,
        "too short (60 s < 100 s, profile «C»)",
    ), "the durations are the matched profile's rules: the call is not handed on to D"
    assert match(config, facts(entity_type="contacts", pipeline_id=None))[0].name == "D"  # type: ignore[union-attr]


def test_without_profiles_every_call_matches_with_the_top_level_minimum() -> None:
    config = config_with([], min_duration_seconds=10, exclude_phones=["+7 495 123-45-67"])
    profile, why = match(config, facts(entity_type="customers", duration=60))
    assert profile is not None and profile.name == "" and why is None
    assert match(config, facts(duration=5)) == (None, "too short (5 s < 10 s)")
    assert match(config, facts(phone="84951234567"))[1] == "excluded number (poller.exclude_phones)"


def test_profile_config_problems_name_the_profile(tmp_path: Path) -> None:
    rubric = tmp_path / "wholesale.toml"
    rubric.write_text('[[rubric]]\nid = "price"\ntitle = "Цена"\n', encoding="utf-8")
    config = config_with([{"name": "Опт", "rubric_file": str(rubric)}])
    assert [item.id for item in config.profiles[0].rubric] == ["price"]
    with pytest.raises(ConfigError) as caught:
        config_with([{"name": "A"}, {"name": "B", "directions": ["sideways"]}])
    assert caught.value.problems == ["profiles[2].directions[1]: Input should be 'in' or 'out'"]
    with pytest.raises(ConfigError) as caught:
        config_with([{"name": "A"}, {"name": "A"}])
    assert caught.value.problems == ["profiles: profile names must be unique: A more than once"]


@pytest.mark.slow
def test_backfills_estimate_counts_the_calls_to_transcribe_per_profile(servers: Servers) -> None:
    account(servers)
    add_calls(servers)
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 400))
    result = run_cli("backfill", "--since", day, "--until", day, config=write_config(servers))
    assert result.returncode == 1, result.stderr  # not confirmed: no terminal, no --yes
    assert "6 new calls: 2 to transcribe" in result.stdout
    assert "0 missed (not alerted), 4 too short, unanswered or matching no profile" in result.stdout
    assert "backfill: to transcribe per profile: «Опт» 1, «Продажи» 1" in result.stdout
    assert servers.recordings.requests == [], "counting downloads nothing"


def test_the_digest_counts_calls_per_profile() -> None:
    from salesbot_poller.reports.digest import render_digest

    parts = render_digest([], 0, 86_400, None, profiles={"Опт": (3, 1), "": (2, 0), "Продажи": (5, 2)})
    text = "\n".join(parts)
    assert "📋 <b>По профилям</b>\n«Опт»: разговоров 3, пропущено 1\n«Продажи»: разговоров 5, пропущено 2" in text
    assert text.endswith("без профиля (не разбирались): разговоров 2, пропущено 0")
