"""`[[trackers]]` refused with one line per problem, naming the tracker's position and key:
by parse and through `salesbot-poller check` on a config file (issue 25, bad input)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from salesbot_poller.config import parse_config
from salesbot_poller.config.trackers import MAX_PHRASE_CHARS, MAX_PHRASE_WORDS, MAX_PHRASES, MAX_TRACKERS
from salesbot_poller.errors import ConfigError
from tests.conftest import run_cli
from tests.test_config_files import CONFIG  # a minimal valid config, {tmp} for its directory


def problems_of(raw: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {}, require_secrets=False)
    return caught.value.problems


def tracker(name: str, *phrases: str) -> dict[str, object]:
    return {"name": name, "phrases": list(phrases)}


def check(tmp_path: Path, trackers_toml: str) -> tuple[int, str]:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(tmp=tmp_path) + trackers_toml, encoding="utf-8")
    path.chmod(0o600)
    result = run_cli("check", config=path)
    return result.returncode, result.stderr


def test_valid_trackers_parse_and_a_profile_names_them() -> None:
    raw = {
        "trackers": [tracker("Конкурент", "Стеллаж-Мастер", "у конкурентов дешевле"), tracker("Скидка", "скидка")],
        "profiles": [{"name": "Опт", "trackers": ["Скидка"]}],
    }
    config = parse_config(raw, {}, require_secrets=False)
    assert [t.name for t in config.trackers] == ["Конкурент", "Скидка"]
    assert config.profiles[0].trackers == ["Скидка"]


def test_each_bad_phrase_is_one_line_at_its_position_naming_the_tracker() -> None:
    problems = problems_of(
        {
            "trackers": [
                tracker("Скидка", "скидка"),
                tracker("Пустой"),
                tracker("Стоп", "скидка", "и не", "   ", "*** (?)"),
                tracker("Длинный", " ".join(["слово"] * (MAX_PHRASE_WORDS + 1)), "я" * (MAX_PHRASE_CHARS + 1)),
            ]
        }
    )
    assert problems == [
        'trackers[2].phrases: no phrases in tracker "Пустой": a tracker needs at least one',
        'trackers[3].phrases[2]: a phrase of only stop-words ("и не") in tracker "Стоп": '
        "add a word that means something",
        'trackers[3].phrases[3]: an empty phrase in tracker "Стоп": write the words to look for',
        'trackers[3].phrases[4]: an empty phrase in tracker "Стоп": write the words to look for',
        f'trackers[4].phrases[1]: a phrase of {MAX_PHRASE_WORDS + 1} words in tracker "Длинный": '
        f"at most {MAX_PHRASE_WORDS}",
        f'trackers[4].phrases[2]: a phrase of {MAX_PHRASE_CHARS + 1} characters in tracker "Длинный": '
        f"at most {MAX_PHRASE_CHARS}",
    ]


def test_a_duplicate_name_and_an_unknown_profile_tracker_are_named() -> None:
    dup = problems_of({"trackers": [tracker("Конкурент", "a"), tracker("Скидка", "b"), tracker("конкурент", "c")]})
    assert dup == ['trackers[3].name: "конкурент" is used twice']
    unknown = problems_of(
        {"trackers": [tracker("Скидка", "скидка")], "profiles": [{"name": "Опт", "trackers": ["Скидка", "Отказ"]}]}
    )
    assert unknown == ['profiles[1].trackers[2]: "Отказ" is not a [[trackers]] name']


def test_500_trackers_of_200_phrases_are_refused_at_once_in_one_line() -> None:
    started = time.monotonic()
    problems = problems_of({"trackers": [tracker(f"T{i}", *(["скидка"] * 200)) for i in range(500)]})
    assert problems == [f"trackers: 500 trackers: at most {MAX_TRACKERS}"]
    assert time.monotonic() - started < 5  # a hang or a line per tracker is what this catches
    too_many = problems_of({"trackers": [tracker("Скидка", *(["скидка"] * (MAX_PHRASES + 1)))]})
    assert too_many == [
        f'trackers[1].phrases: {MAX_PHRASES + 1} phrases in tracker "Скидка": at most {MAX_PHRASES} per tracker'
    ]


def test_check_names_the_offending_tracker_and_key(tmp_path: Path) -> None:
    code, stderr = check(
        tmp_path,
        '[[trackers]]\nname = "Конкурент"\nphrases = ["Стеллаж-Мастер"]\n'
        '[[trackers]]\nname = "Скидка"\nphrases = ["скидка", "ну вот"]\n'
        '[[trackers]]\nname = "Конкурент"\nphrases = ["Складские системы"]\n',
    )
    assert code == 2, stderr
    assert 'config: trackers[2].phrases[2]: a phrase of only stop-words ("ну вот") in tracker "Скидка"' in stderr


def test_check_refuses_500_trackers_of_200_phrases_in_one_line(tmp_path: Path) -> None:
    phrases = ",".join(['"x"'] * 200)  # short: the file stays under the config's 1 MB limit
    body = "".join(f'[[trackers]]\nname = "T{i}"\nphrases = [{phrases}]\n' for i in range(500))
    code, stderr = check(tmp_path, body)
    assert code == 2, stderr
    assert [line for line in stderr.splitlines() if "config:" in line] == [
        f"salesbot-poller: config: trackers: 500 trackers: at most {MAX_TRACKERS}"
    ]


def test_check_reports_a_duplicate_tracker_name(tmp_path: Path) -> None:
    code, stderr = check(
        tmp_path,
        '[[trackers]]\nname = "Конкурент"\nphrases = ["Стеллаж-Мастер"]\n'
        '[[trackers]]\nname = "Конкурент"\nphrases = ["Складские системы"]\n',
    )
    assert code == 2, stderr
    assert 'config: trackers[2].name: "Конкурент" is used twice' in stderr
