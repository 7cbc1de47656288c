"""`salesbot-poller eval DIR` when DIR holds `trackers.toml`: the trackers measured on labelled
sentences. No config, model, network or database: the matcher only.

Contract:
- DIR holds `trackers.toml` (`[[trackers]]` tables as in a config, validated the same way)
  and `sentences.toml` (`[[sentence]]`: `text`, optional `speaker` "client" / "manager"
  (none: unknown, searched by every tracker), `expected`: the names of the trackers that
  should be found in it; see eval/README.md).
- Each sentence is matched as one utterance of its speaker; per tracker, a sentence it is
  expected in and found in is a true positive, found but not expected a false positive,
  expected but not found a false negative (at most one of each per sentence).
- The table: per tracker precision, recall, TP, FP, FN; then each sentence whose found set
  differs from its expected one, with both. Exit 0 when every tracker reaches `TARGET`
  precision and recall, 1 otherwise, 2 when DIR or a file cannot be read or is invalid.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from salesbot_poller.cli.common import EXIT_CHECK_FAILED, EXIT_CONFIG, EXIT_OK, err
from salesbot_poller.config import Config, TrackerConfig
from salesbot_poller.config.problems import describe
from salesbot_poller.trackers import Matcher, Utterance

TARGET = 0.95  # precision and recall every tracker must reach on the shipped set
TRACKERS_FILE, SENTENCES_FILE = "trackers.toml", "sentences.toml"
SPEAKERS = {"client", "manager", ""}


class TrackerEvalError(Exception):
    """A file of the set is missing, unreadable or invalid; its message names it."""


@dataclass(frozen=True)
class Sentence:
    text: str
    speaker: str
    expected: frozenset[str]


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


@dataclass
class TrackerEval:
    scores: dict[str, Score]
    misses: list[tuple[Sentence, frozenset[str]]] = field(default_factory=list)  # (sentence, found)

    def passed(self, target: float = TARGET) -> bool:
        return all(s.precision >= target and s.recall >= target for s in self.scores.values())


def is_tracker_set(directory: Path) -> bool:
    return (directory / TRACKERS_FILE).is_file()


def _toml(path: Path) -> dict[str, object]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TrackerEvalError(f"{path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TrackerEvalError(f"{path}: {exc}") from None


def load_set(directory: Path) -> tuple[list[TrackerConfig], list[Sentence]]:
    """The trackers and sentences of `directory` (see the module contract)."""
    raw = _toml(directory / TRACKERS_FILE)
    try:
        trackers = Config.model_validate({"trackers": raw.get("trackers", [])}).trackers
    except ValidationError as exc:
        raise TrackerEvalError(
            f"{directory / TRACKERS_FILE}: " + "; ".join(describe(e) for e in exc.errors())
        ) from None
    if not trackers:
        raise TrackerEvalError(f"{directory / TRACKERS_FILE}: no [[trackers]]")
    names = {t.name for t in trackers}
    sentences = []
    items = _toml(directory / SENTENCES_FILE).get("sentence", [])
    for number, item in enumerate(items if isinstance(items, list) else [], start=1):
        where = f"{directory / SENTENCES_FILE}: sentence[{number}]"
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise TrackerEvalError(f"{where}: needs text")
        speaker, expected = item.get("speaker", ""), item.get("expected", [])
        if speaker not in SPEAKERS:
            raise TrackerEvalError(f"{where}.speaker: client, manager or none, not {speaker!r}")
        if not isinstance(expected, list) or not set(expected) <= names:
            raise TrackerEvalError(f"{where}.expected: names of {TRACKERS_FILE}'s trackers only")
        sentences.append(Sentence(item["text"], speaker, frozenset(expected)))
    if not sentences:
        raise TrackerEvalError(f"{directory / SENTENCES_FILE}: no [[sentence]]")
    return trackers, sentences


def evaluate_trackers(matcher: Matcher, sentences: Sequence[Sentence]) -> TrackerEval:
    result = TrackerEval({t.name: Score() for t in matcher.trackers})
    for sentence in sentences:
        found = frozenset(h.tracker for h in matcher.hits([Utterance(sentence.speaker, None, sentence.text)]))
        for name, score in result.scores.items():
            score.tp += name in found and name in sentence.expected
            score.fp += name in found and name not in sentence.expected
            score.fn += name not in found and name in sentence.expected
        if found != sentence.expected:
            result.misses.append((sentence, found))
    return result


def _names(names: frozenset[str]) -> str:
    return ", ".join(sorted(names)) or "—"


def print_tracker_report(result: TrackerEval, header: str, out: Callable[[str], None]) -> None:
    out(header)
    out("")
    width = max(len(name) for name in result.scores)
    out(f"{'tracker':<{width}}  precision  recall   TP   FP   FN")
    for name, s in result.scores.items():
        mark = "" if s.precision >= TARGET and s.recall >= TARGET else "  below target"
        out(f"{name:<{width}}  {s.precision:>9.3f}  {s.recall:>6.3f}  {s.tp:>3}  {s.fp:>3}  {s.fn:>3}{mark}")
    out("")
    out(f"misses: {len(result.misses)}" + (":" if result.misses else ""))
    for sentence, found in result.misses:
        out(f"  «{sentence.text}» ({sentence.speaker or 'unknown'})")
        out(f"      expected: {_names(sentence.expected)}; found: {_names(found)}")
    out(f"target {TARGET:.2f} precision and recall per tracker: " + ("reached" if result.passed() else "NOT reached"))


def run(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    try:
        trackers, sentences = load_set(directory)
    except TrackerEvalError as exc:
        err(f"eval: {exc}")
        return EXIT_CONFIG
    matcher = Matcher(trackers)
    result = evaluate_trackers(matcher, sentences)
    header = f"eval: {len(sentences)} sentences, {len(trackers)} trackers in {directory} (no model, no network)"
    print_tracker_report(result, header, lambda line: print(line, flush=True))
    return EXIT_OK if result.passed() else EXIT_CHECK_FAILED
