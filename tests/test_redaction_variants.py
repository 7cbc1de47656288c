"""The redactor measured on `tests/data/redaction_variants.jsonl`: realistic Russian call speech
as speech-to-text writes it (digits or words, fillers, speaker turns, spoken e-mails).

Each line: `category`, `text`, and for a positive the `redacted` text expected back (every
piece of the value replaced, everything else kept); a negative (category `neg/...`: prices,
dates, quantities, times, order numbers) has no `redacted` and must come back unchanged.
The catch rate is the share of positives redacted exactly as expected; the misses and the
false positives are printed (`pytest -s`) and named in the failure."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from salesbot_poller.services.redact_pii import KINDS, redact

VARIANTS = Path(__file__).resolve().parent / "data" / "redaction_variants.jsonl"
TARGET = 0.97


def variants() -> list[dict[str, Any]]:
    with VARIANTS.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def scored() -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]], list[tuple[dict[str, Any], str]]]:
    """The positives, the positives missed (with what came back), the negatives changed."""
    rows = variants()
    positives = [row for row in rows if not row["category"].startswith("neg/")]
    got = {row["text"]: redact(row["text"], KINDS) for row in rows}
    misses = [(row, got[row["text"]]) for row in positives if got[row["text"]] != row["redacted"]]
    changed = [
        (row, got[row["text"]])
        for row in rows
        if row["category"].startswith("neg/") and got[row["text"]] != row["text"]
    ]
    return positives, misses, changed


def test_the_variant_set_is_large_enough_and_well_formed() -> None:
    rows = variants()
    negatives = [row for row in rows if row["category"].startswith("neg/")]
    assert len(rows) - len(negatives) >= 100 and len(negatives) >= 40
    assert all(("redacted" in row) != row["category"].startswith("neg/") for row in rows)
    assert len({row["text"] for row in rows}) == len(rows), "no variant twice"


def test_at_least_97_percent_of_the_personal_data_is_caught_and_no_negative_is_touched() -> None:
    positives, misses, changed = scored()
    rate = 1 - len(misses) / len(positives)
    by_category = Counter(row["category"] for row, _ in misses)
    lines = [f"caught {len(positives) - len(misses)}/{len(positives)} = {rate:.1%}; false positives {len(changed)}"]
    lines += [f"  missed per category: {dict(sorted(by_category.items()))}"] if misses else []
    lines += [f"  MISS [{row['category']}] {row['text']!r}\n    got  {got!r}" for row, got in misses]
    lines += [f"  FALSE [{row['category']}] {row['text']!r}\n    got  {got!r}" for row, got in changed]
    report = "\n".join(lines)
    print(report)
    assert rate >= TARGET and not changed, report
