"""The redactor (`services/redact_pii.py`) on the variant set and on an hour-long dialogue.

Run from the repository root:
    .venv/bin/python benchmarks/redaction.py [--runs 5]

Table 1: the catch rate on the positives of `tests/data/redaction_variants.jsonl` (redacted
exactly as expected) and the false positives on its negatives, per category. Table 2: the
time to redact every variant (variants/s) and a one-hour dialogue ("Менеджер: "/"Клиент: "
lines, numbers said with fillers and echoes, prices and dates), min / median / max over `--runs`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from salesbot_poller.services.redact_pii import KINDS, redact

VARIANTS = Path(__file__).resolve().parent.parent / "tests" / "data" / "redaction_variants.jsonl"
# About 150 words a minute: a one-hour call is ~9,000 words, ~60,000 characters.
HOUR_LINES = [
    "[00:10] Менеджер: Добрый день, компания Ромашка, меня зовут Иван, чем могу помочь?",
    "[00:14] Клиент: Здравствуйте, нужно три тысячи штук к двадцать пятому декабря, по 45 900 рублей.",
    "[00:20] Менеджер: Так, записываю. Диктуйте номер, пожалуйста.",
    "[00:23] Клиент: восемь девятьсот шестнадцать, ээ, сто двадцать три",
    "[00:26] Менеджер: сто двадцать три, так",
    "[00:27] Клиент: сорок пять шестьдесят семь. И почта ivan собака mail точка ru.",
    "[00:31] Менеджер: Отлично, счёт № 1234 от 25.12.2026 пришлю до 15:30, сумма 137 700 ₽.",
]


def variants() -> list[dict[str, Any]]:
    with VARIANTS.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def hour() -> str:
    text, lines = "", []
    while len(text) < 60_000:
        lines += HOUR_LINES
        text = "\n".join(lines)
    return text


def timed(runs: int, work: Any) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    rows = variants()
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        got = redact(row["text"], KINDS)
        group = row["category"].split("/")[0] if not row["category"].startswith("neg/") else row["category"]
        right = got == row["text"] if row["category"].startswith("neg/") else got == row["redacted"]
        totals[group][0] += right
        totals[group][1] += 1
    print("category       | right / all | share")
    print("---------------|-------------|------")
    for group, (right, count) in sorted(totals.items()):
        print(f"{group:14} | {right:4} / {count:<4} | {right / count:6.1%}")
    print()
    text = hour()
    tables = [
        (f"all {len(rows)} variants", timed(runs, lambda: [redact(row["text"], KINDS) for row in rows]), len(rows)),
        (f"a one-hour dialogue ({len(text)} chars)", timed(runs, lambda: redact(text, KINDS)), 1),
    ]
    print("what                                 | min      | median   | max      | per second")
    print("-------------------------------------|----------|----------|----------|-----------")
    for name, times, items in tables:
        median = statistics.median(times)
        print(
            f"{name:36} | {min(times) * 1000:6.1f}ms | {median * 1000:6.1f}ms | {max(times) * 1000:6.1f}ms"
            f" | {items / median:9.0f}"
        )


if __name__ == "__main__":
    main()
