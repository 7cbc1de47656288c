"""`check` names what a valid config still gets wrong (issue 28, point 8): a profile whose
minimum duration is over its maximum, a profile an earlier one shadows (both fail `check`),
and a daily budget no price can ever reach (a warning)."""

from __future__ import annotations

from typing import Any

from salesbot_poller.cli.check import config_findings
from salesbot_poller.config import Config, parse_config
from salesbot_poller.pipeline.profiles import CallFacts, match, profile_conflicts
from tests.conftest import Servers, run_cli


def config_with(profiles: list[dict[str, Any]], **sections: dict[str, Any]) -> Config:
    return parse_config({"profiles": profiles, **sections}, {}, require_secrets=False)


def test_a_minimum_over_the_maximum_is_named_whether_its_own_or_the_pollers() -> None:
    config = config_with(
        [
            {"name": "Опт", "pipelines": [2002], "min_duration_seconds": 60, "max_duration_seconds": 30},
            {"name": "Короткие", "users": [7], "max_duration_seconds": 20},
            {"name": "Розница", "users": [8], "min_duration_seconds": 30, "max_duration_seconds": 30},
        ],
        poller={"min_duration_seconds": 25},
    )
    assert profile_conflicts(config) == [
        "profiles[1] «Опт»: min_duration_seconds 60 s is over max_duration_seconds 30 s: "
        "every answered call it takes is skipped",
        "profiles[2] «Короткие»: poller.min_duration_seconds (not overridden) 25 s is over max_duration_seconds "
        "20 s: every answered call it takes is skipped",
    ]


def test_a_profile_whose_calls_an_earlier_one_all_takes_is_never_chosen() -> None:
    config = config_with(
        [
            {"name": "Продажи", "groups": [10], "sources": ["Mango"]},
            {"name": "Ольга", "groups": [10], "users": [555], "sources": ["mango"], "directions": ["in"]},
            {"name": "Все Mango", "sources": ["Mango"]},  # wider than «Продажи»: not shadowed
            {"name": "Сделки Mango", "pipelines": [1001], "sources": ["Mango"], "entities": ["leads", "contacts"]},
            {"name": "Никто", "entities": []},
        ]
    )
    assert profile_conflicts(config) == [
        "profiles[2] «Ольга» is never chosen: every call it takes matches profiles[1] «Продажи» first "
        "(profiles are tried in order: move it up, or narrow «Продажи»)",
        # a profile naming pipelines takes calls on leads only, whatever its entities say
        "profiles[4] «Сделки Mango» is never chosen: every call it takes matches profiles[3] «Все Mango» first "
        "(profiles are tried in order: move it up, or narrow «Все Mango»)",
        "profiles[5] «Никто» is never chosen: it takes no call (its entities or directions leave none)",
    ]
    olga = CallFacts(entity_type="leads", direction="in", duration=90, answered=True, source="mango",
                     user_id=555, group_id=10)  # fmt: skip
    assert match(config, olga)[0].name == "Продажи"  # type: ignore[union-attr]


def test_profiles_that_each_take_calls_of_their_own_are_not_flagged() -> None:
    config = config_with(
        [
            {"name": "Опт", "pipelines": [2002]},
            {"name": "Продажи", "groups": [10]},  # takes calls on contacts, and other pipelines
            {"name": "Исходящие Опт", "pipelines": [2002, 3003], "directions": ["out"]},  # 3003 is its own
            {"name": "Остальные"},
        ]
    )
    assert profile_conflicts(config) == []


def test_a_budget_with_every_price_0_is_a_warning_and_a_real_one_is_not() -> None:
    free = {
        "base_url": "http://127.0.0.1:8000/v1",  # a server of one's own (on OpenAI's, 0 is warned of too)
        "audio_price_per_minute_usd": 0,
        "input_token_price_per_million_usd": 0,
        "output_token_price_per_million_usd": 0,
        "daily_budget_usd": 50,
    }
    assert config_findings(config_with([], openai=free)) == (
        [],
        [
            "openai.daily_budget_usd is $50.00 but audio_price_per_minute_usd and the token prices are all 0: "
            "the estimate stays $0 and the budget is never reached; set the prices, or daily_budget_usd = 0 "
            "for no budget"
        ],
    )
    assert config_findings(config_with([], openai=free | {"daily_budget_usd": 0})) == ([], [])
    assert config_findings(config_with([], openai=free | {"input_token_price_per_million_usd": 0.15})) == ([], [])
    assert config_findings(config_with([])) == ([], []), "the defaults: OpenAI's built-in prices"
    audio_free = {"base_url": "http://127.0.0.1:8000/v1", "audio_price_per_minute_usd": 0, "daily_budget_usd": 50}
    assert config_findings(config_with([], openai=audio_free)) == ([], []), "the analysis is still priced"


def test_check_fails_on_a_profile_conflict_and_warns_of_an_unreachable_budget(servers: Servers) -> None:
    path = servers.write_config()
    free = (
        "audio_price_per_minute_usd = 0\ninput_token_price_per_million_usd = 0\n"
        "output_token_price_per_million_usd = 0\n"
    )
    text = path.read_text().replace("[openai]\n", "[openai]\n" + free)
    path.write_text(
        text + '[[profiles]]\nname = "Все"\n[[profiles]]\nname = "Опт"\npipelines = [2002]\n'
        "min_duration_seconds = 60\nmax_duration_seconds = 30\n"
    )
    result = run_cli("check", config=path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].startswith("config: warning: openai.daily_budget_usd is $50.00 but")
    assert lines[2] == (
        "config: FAILED: profiles[2] «Опт»: min_duration_seconds 60 s is over max_duration_seconds 30 s: "
        "every answered call it takes is skipped"
    )
    assert lines[3].startswith("config: FAILED: profiles[2] «Опт» is never chosen: every call it takes matches")
    assert lines[4].startswith("amocrm: ok"), "the services are still checked"
    path.write_text(text.replace(free, ""))
    good = run_cli("check", config=path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "config: " not in good.stdout.replace("config: ok", "")
