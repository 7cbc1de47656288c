"""`salesbot-poller eval --corrections DIR --since DAY [--yes]`: the calls the head of sales
corrected, written as an eval set (the format of `eval/README.md`).

Contract of `write_cases(calls, directory, kinds)`:
- One `call-<id>.txt` (the stored transcript, one line per turn) and one
  `call-<id>.expected.toml` per corrected call: a comment line first (the call, its day, its
  manager and how many verdicts were corrected, by whom), `[verdicts]` with every item of the
  call's rubric that has a verdict (the human verdict where one was given, else the model's,
  which the corrector saw and let stand; `not_assessed` items are left out), `[score]` with
  the score those verdicts give (`domain.rubric_score`, the card's rule) and a tolerance,
  `[quotes]` with the verified quotes, and `[call] direction`.
- `rubric.toml` beside them: the items (id, title, weight) the calls were scored on, so a
  team whose rubric changed later knows what the set measures.
- Phone numbers and card numbers (whatever `analysis.redact` names) are replaced by their
  placeholders in the transcript and the quotes (`redact_pii.redact`); names are not.
- A call whose transcript is gone (retention, `forget`) is skipped and counted.
- Existing files of the same names are replaced; nothing else in DIR is touched.

`run(args, config)`: the command. It refuses (exit 2, one line naming `analysis.redact`)
when `analysis.redact` lacks "phone" or "card" and `--yes` is not given: the transcripts
would leave the database with those numbers in them.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path

from pydantic import ValidationError

from salesbot_poller.cli.common import EXIT_CONFIG, EXIT_OK, err, utc_now, zone
from salesbot_poller.cli.export import parse_day
from salesbot_poller.config import Config
from salesbot_poller.domain import CallAnalysis, RubricResult, rubric_score
from salesbot_poller.services.redact_pii import redact
from salesbot_poller.store import Store

TOLERANCE = 10  # points a model's score may differ and still agree, as the shipped set mostly uses
MUST_REDACT = ("phone", "card")
_SCORED = ("done", "partly", "missed", "not_applicable")


@dataclass(frozen=True)
class CorrectedCall:
    """A corrected call as the store gives it: its analysis and the human verdicts per item id."""

    call_id: int
    started_at: int  # the call's event time, Unix seconds
    direction: str  # in / out
    manager: str
    transcript: str | None  # None once personal data is removed
    analysis: CallAnalysis
    human: dict[str, str]  # item id -> done / partly / missed
    corrected_by: tuple[str, ...] = ()


@dataclass
class Written:
    calls: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # no transcript left
    verdicts: int = 0  # human verdicts written
    changed: int = 0  # of them, different from the model's


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(ch if ch >= " " or ch == "\t" else " " for ch in escaped) + '"'


def expected_verdicts(analysis: CallAnalysis, human: dict[str, str]) -> list[RubricResult]:
    """The call's rubric with the human verdicts in place of the model's (see the contract)."""
    results = []
    for item in analysis.rubric:
        verdict = human.get(item.item_id, item.verdict)
        if verdict in _SCORED:
            results.append(item.model_copy(update={"verdict": verdict}))
    return results


def expected_toml(call: CorrectedCall, kinds: Sequence[str], tz_day: str) -> str:
    results = expected_verdicts(call.analysis, call.human)
    changed = sum(
        1 for item in call.analysis.rubric if item.item_id in call.human and call.human[item.item_id] != item.verdict
    )
    who = ", ".join(call.corrected_by) or "?"
    lines = [
        f"# call {call.call_id} of {tz_day}, {call.manager or 'manager unknown'}: {len(call.human)} verdict(s)"
        f" checked by {who}, {changed} changed from the model's",
        "[verdicts]",
    ]
    for item in results:
        note = "  # human" if item.item_id in call.human else "  # the model's, left standing"
        lines.append(f"{item.item_id} = {_toml_string(item.verdict)}{note}")
    score = rubric_score(results)
    lines += ["[score]"]
    if score is not None:
        lines.append(f"expected = {score}")
    lines.append(f"tolerance = {TOLERANCE}")
    quotes = [(r.item_id, redact(r.evidence, kinds)) for r in call.analysis.rubric if r.verified and r.evidence]
    if quotes:
        lines.append("[quotes]")
        lines += [f"{item_id} = {_toml_string(text)}" for item_id, text in quotes]
    lines += ["[call]", f"direction = {_toml_string('out' if call.direction == 'out' else 'in')}"]
    return "\n".join(lines) + "\n"


def rubric_toml(calls: Sequence[CorrectedCall]) -> str:
    """The items the calls were scored on, first title and weight seen per id."""
    seen: dict[str, RubricResult] = {}
    for call in calls:
        for item in call.analysis.rubric:
            seen.setdefault(item.item_id, item)
    lines = ["# the rubric these calls were scored on (salesbot-poller eval --corrections)"]
    for item in seen.values():
        lines += ["[[item]]", f"id = {_toml_string(item.item_id)}", f"title = {_toml_string(item.title)}"]
        lines.append(f"weight = {item.weight:g}")
    return "\n".join(lines) + "\n"


def write_cases(
    calls: Iterable[CorrectedCall], directory: Path, kinds: Sequence[str], tz: tzinfo | None = None
) -> Written:
    """See the module contract; `tz` (a tzinfo, None = UTC) dates the calls in the comment line."""
    directory.mkdir(parents=True, exist_ok=True)
    written = Written()
    kept: list[CorrectedCall] = []
    for call in calls:
        if not call.transcript:
            written.skipped.append(call.call_id)
            continue
        day = datetime.fromtimestamp(call.started_at, tz).date().isoformat()
        stem = directory / f"call-{call.call_id}"
        stem.with_suffix(".txt").write_text(redact(call.transcript, kinds).rstrip("\n") + "\n", encoding="utf-8")
        stem.with_name(f"{stem.name}.expected.toml").write_text(expected_toml(call, kinds, day), encoding="utf-8")
        written.calls.append(call.call_id)
        written.verdicts += len(call.human)
        written.changed += sum(
            1 for r in call.analysis.rubric if r.item_id in call.human and call.human[r.item_id] != r.verdict
        )
        kept.append(call)
    if kept:
        (directory / "rubric.toml").write_text(rubric_toml(kept), encoding="utf-8")
    return written


def unredacted(kinds: Sequence[str]) -> list[str]:
    """The kinds of `MUST_REDACT` that `analysis.redact` leaves in."""
    return [kind for kind in MUST_REDACT if kind not in kinds]


def refusal(config: Config, yes: bool) -> str | None:
    """The one line refusing the command, or None when it may write."""
    missing = unredacted(config.analysis.redact)
    if missing and not yes:
        return (
            f"eval --corrections: analysis.redact = {list(config.analysis.redact)} leaves {' and '.join(missing)}"
            " numbers in the transcripts it would write; add them to analysis.redact, or pass --yes to write"
            " them as stored"
        )
    return None


def summary(written: Written, directory: Path) -> str:
    text = (
        f"eval --corrections: {len(written.calls)} corrected call(s) written to {directory}"
        f" ({written.verdicts} human verdicts, {written.changed} differ from the model's)"
    )
    if written.skipped:
        text += f"; {len(written.skipped)} skipped: transcript already removed"
    if written.calls:
        text += f"\nrun: salesbot-poller eval {directory}"
    return text


def corrected_calls(store: Store, since: int) -> list[CorrectedCall]:
    """The calls with a correction made at `since` or later, oldest correction first; each with
    every human verdict it holds now (also those set before `since`). A call whose stored
    analysis cannot be read is left out."""
    order: dict[int, None] = {}
    for row in store.corrected_between(since, 2**62):
        order.setdefault(int(row.call_id), None)
    calls = []
    for call_id in order:
        call = store.find_call(call_id)
        if call is None or call.analysis_json is None:
            continue
        try:
            analysis = CallAnalysis.model_validate_json(call.analysis_json)
        except ValidationError:
            continue
        rows = store.corrections(call_id)
        calls.append(
            CorrectedCall(
                call_id,
                int(call.event_created_at),
                str(call.direction),
                call.manager_name or "",
                call.transcript,
                analysis,
                {item_id: str(row.verdict) for item_id, row in rows.items()},
                tuple(dict.fromkeys(str(row.corrected_by) for row in rows.values())),
            )
        )
    return calls


def run(args: argparse.Namespace, config: Config) -> int:
    """`eval --corrections DIR --since DAY [--yes]`: see the module contract. Exit 2 on a bad
    day or the refusal; 0 when written (none corrected included: it says so)."""
    line = refusal(config, bool(args.yes))
    if line is not None:
        err(line)
        return EXIT_CONFIG
    tz = zone(config)
    try:
        day = parse_day(args.since, "--since")
    except ValueError as exc:
        err(f"eval --corrections: {exc}")
        return EXIT_CONFIG
    since = int(datetime.combine(day, datetime.min.time(), tz).timestamp())
    store = Store.open(config.storage.database, int(utc_now().timestamp()))
    try:
        calls = corrected_calls(store, since)
    finally:
        store.close()
    written = write_cases(calls, Path(args.corrections), config.analysis.redact, tz)
    print(summary(written, Path(args.corrections)), flush=True)
    return EXIT_OK
