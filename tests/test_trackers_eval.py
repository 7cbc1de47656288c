"""`salesbot-poller eval eval/trackers`: the shipped labelled set reaches the target, with no
config at all; a worse matcher or a worse tracker list is shown below it and exits 1."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from salesbot_poller.cli.evaluate_trackers import TARGET, evaluate_trackers, load_set
from salesbot_poller.trackers import Matcher, match
from tests.conftest import run_cli

SET = Path(__file__).resolve().parent.parent / "eval" / "trackers"
ROW = re.compile(r"^(?P<name>.+?)\s+(?P<precision>\d\.\d{3})\s+(?P<recall>\d\.\d{3})\s+\d+\s+\d+\s+\d+")


def rows(stdout: str) -> dict[str, tuple[float, float]]:
    found = {}
    for line in stdout.splitlines():
        row = ROW.match(line)
        if row:
            found[row["name"]] = (float(row["precision"]), float(row["recall"]))
    return found


def test_the_shipped_set_reaches_the_target_for_every_tracker_without_a_config() -> None:
    trackers, sentences = load_set(SET)
    assert len(sentences) >= 200
    result = run_cli("eval", str(SET))
    assert result.returncode == 0, result.stdout + result.stderr
    table = rows(result.stdout)
    assert set(table) == {t.name for t in trackers}
    assert all(p >= TARGET and r >= TARGET for p, r in table.values()), table
    assert "misses:" in result.stdout and "target 0.95 precision and recall per tracker: reached" in result.stdout


def test_a_matcher_without_the_one_word_gap_falls_below_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    trackers, sentences = load_set(SET)
    assert evaluate_trackers(Matcher(trackers), sentences).passed()
    monkeypatch.setattr(match, "MAX_GAP", 0)
    assert not evaluate_trackers(Matcher(trackers), sentences).passed()


def test_a_tracker_missing_its_phrases_is_shown_below_target_and_exits_1(tmp_path: Path) -> None:
    shutil.copytree(SET, tmp_path / "set")
    toml = tmp_path / "set" / "trackers.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace('"скидочка", ', ""), encoding="utf-8")
    result = run_cli("eval", str(tmp_path / "set"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert rows(result.stdout)["Скидка"][1] < TARGET
    assert re.search(r"^Скидка .* below target$", result.stdout, re.M)
    assert "«Скидочку бы нам, мы же постоянные клиенты» (client)" in result.stdout


def test_a_broken_set_is_one_line_and_exit_2(tmp_path: Path) -> None:
    shutil.copytree(SET, tmp_path / "set")
    (tmp_path / "set" / "trackers.toml").write_text('[[trackers]]\nname = "Пусто"\nphrases = ["и"]\n', encoding="utf-8")
    result = run_cli("eval", str(tmp_path / "set"))
    assert result.returncode == 2
    assert 'trackers[1].phrases[1]: a phrase of only stop-words ("и")' in result.stderr
