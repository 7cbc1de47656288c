"""Check the eval set: every expected file parses and agrees with its transcript.

Run from anywhere: `python3 eval/check.py [DIR]` (DIR defaults to this file's folder).
Standard library only, so it runs without the project installed. For each
`NN-slug.expected.toml` beside an `NN-slug.txt` it checks:
- the transcript: every line is "Менеджер: …" or "Клиент: …", optionally prefixed with
  "[mm:ss] " (all lines or none), times never go back, and no side has two turns in a row
  (the bot joins consecutive segments of one side into one line);
- the expected file: a comment line first (what the call tests), `[verdicts]` with exactly
  the six default rubric ids and a verdict each, `[score]` with `expected` equal to the score
  those verdicts give (as `services/rubric.total_score` computes it) and a `tolerance`;
- `[quotes]`: only rubric ids, each phrase found verbatim within one turn of the transcript;
- `[call]` (optional): `direction` "in" (the default) or "out".
Exits 1 and lists the problems when any check fails.
"""

from __future__ import annotations

import math
import re
import sys
import tomllib
from pathlib import Path

RUBRIC_IDS = ("greeting", "needs", "presentation", "objections", "next_step", "closing")
VERDICT_VALUE = {"done": 1.0, "partly": 0.5, "missed": 0.0}
VERDICTS = (*VERDICT_VALUE, "not_applicable")
LINE = re.compile(r"^(?:\[(?P<mm>\d{2}):(?P<ss>[0-5]\d)\] )?(?P<role>Менеджер|Клиент): (?P<text>\S.*)$")


def score(verdicts: dict[str, str]) -> int | None:
    """The score 0..100 with all weights 1, half up; None when no item applies."""
    values = [VERDICT_VALUE[v] for v in verdicts.values() if v != "not_applicable"]
    if not values:
        return None
    return math.floor(100 * sum(values) / len(values) + 0.5)


def check_transcript(path: Path) -> tuple[list[str], list[str]]:
    """Problems with the transcript, and the text of its turns."""
    problems: list[str] = []
    turns: list[str] = []
    stamped: set[bool] = set()
    last_role, last_time = "", -1
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = LINE.match(line)
        if not m:
            problems.append(f"{path.name}:{n}: not a 'Менеджер: …' / 'Клиент: …' line: {line[:60]!r}")
            continue
        stamped.add(m["mm"] is not None)
        if m["mm"] is not None:
            time = int(m["mm"]) * 60 + int(m["ss"])
            if time < last_time:
                problems.append(f"{path.name}:{n}: time goes back")
            last_time = time
        if m["role"] == last_role:
            problems.append(f"{path.name}:{n}: two {m['role']} turns in a row")
        last_role = m["role"]
        turns.append(m["text"])
    if len(stamped) > 1:
        problems.append(f"{path.name}: some lines have timestamps and some do not")
    if not turns:
        problems.append(f"{path.name}: empty")
    return problems, turns


def check_expected(path: Path, turns: list[str]) -> list[str]:
    """Problems with an expected file, given its transcript's turns."""
    name = path.name
    text = path.read_text(encoding="utf-8")
    if not text.startswith("# "):
        return [f"{name}: the first line must be a comment saying what the call tests"]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return [f"{name}: {exc}"]
    problems: list[str] = []
    verdicts = data.get("verdicts", {})
    if sorted(verdicts) != sorted(RUBRIC_IDS):
        problems.append(f"{name}: [verdicts] must name exactly {', '.join(RUBRIC_IDS)}")
    bad = {k: v for k, v in verdicts.items() if v not in VERDICTS}
    if bad:
        problems.append(f"{name}: unknown verdicts {bad}; one of {', '.join(VERDICTS)}")
    expected = data.get("score", {}).get("expected")
    tolerance = data.get("score", {}).get("tolerance")
    if not isinstance(expected, int) or not 0 <= expected <= 100:
        problems.append(f"{name}: [score] expected must be an integer 0..100")
    elif not bad and expected != score(verdicts):
        problems.append(f"{name}: [score] expected = {expected}, but the verdicts give {score(verdicts)}")
    if not isinstance(tolerance, int) or not 0 <= tolerance <= 50:
        problems.append(f"{name}: [score] tolerance must be an integer 0..50")
    direction = data.get("call", {}).get("direction", "in")
    if direction not in ("in", "out"):
        problems.append(f'{name}: [call] direction must be "in" or "out", got {direction!r}')
    for item, quote in data.get("quotes", {}).items():
        if item not in RUBRIC_IDS:
            problems.append(f"{name}: [quotes] {item} is not a rubric id")
        elif not isinstance(quote, str) or not quote.strip():
            problems.append(f"{name}: [quotes] {item} must be a non-empty string")
        elif not any(quote in turn for turn in turns):
            problems.append(f"{name}: [quotes] {item} is not said verbatim in one turn: {quote!r}")
    return problems


def main(argv: list[str]) -> int:
    folder = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    transcripts = sorted(p for p in folder.glob("[0-9][0-9]-*.txt"))
    expected_files = sorted(folder.glob("[0-9][0-9]-*.expected.toml"))
    problems: list[str] = []
    for path in expected_files:
        if not path.with_name(path.name.removesuffix(".expected.toml") + ".txt").exists():
            problems.append(f"{path.name}: no transcript beside it")
    for path in transcripts:
        found, turns = check_transcript(path)
        problems += found
        expected = path.with_name(path.stem + ".expected.toml")
        if not expected.exists():
            problems.append(f"{path.name}: no {expected.name} beside it")
            continue
        problems += check_expected(expected, turns)
        words = sum(len(turn.split()) for turn in turns)
        print(f"{path.name}: {len(turns)} turns, {words} words")
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    print(f"{len(transcripts)} calls, {len(problems)} problems")
    return 1 if problems or not transcripts else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
