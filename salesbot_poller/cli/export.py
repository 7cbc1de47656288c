"""`salesbot-poller export --since DAY [--until DAY] [--format csv|jsonl] [--output FILE]`.

Contract of `export(store, since, until, tz, fmt, out)`:
- One row per analysed call that happened from the start of `since` to the end of `until`
  (both days included, in `tz`: the account's zone), oldest first, from the BI tables
  (docs/bi.md): its facts, score, rubric verdicts and next step.
- CSV: a header row, then the rows; the text starts with a UTF-8 BOM so that Excel reads the
  Cyrillic right. One column per rubric item seen in the period (`item:<id>`, its verdict),
  in rubric order; objections joined with " | ". JSON Lines: one object per call with every
  item (verdict, weight, quote, whether it was verified) and objection in full.
- Tracker hits: one column per configured tracker (`tracker:<name>`, its hits in the call),
  in config order; JSON Lines: `trackers` (hits per tracker with any) and `tracker_missing`
  (the expected trackers not said). The hits are read per page, like the rest.
- Streamed: calls are read a page at a time (`Store.export_pages`, keyset paging, plain rows:
  `store/bi_export.py`) and each page written at once (`cli/export_rows.py`), so memory stays
  flat however many calls the period holds. Times are the zone's `isoformat` (`LocalTimes`).
- Fast: tens of thousands of rows a second (benchmarks/export.py); the rows are byte for byte
  what the peewee models' export wrote (tests/test_export_oracle.py keeps that one).
- Corrections: the CSV verdicts, the JSON items' `verdict` and `score` are the model's, as
  the BI tables hold them (people's corrections are in `human_verdict`/`score_corrected`,
  which the export does not print).
- CSV cells are text a spreadsheet may run: a text cell that starts with `=`, `+`, `-`, `@`,
  a tab or a carriage return (a manager's name, a model-written next step) is written with a
  leading `'` (OWASP's rule against formula injection), so Excel shows it as text. Numbers
  stay numbers. JSON Lines stay raw: a program reads them, not a spreadsheet.
- The CSV delimiter is `delimiter`: the command's default is `;` when the account's zone is
  a Russian one or the locale is Russian (Excel there splits columns at `;`, a `,` puts
  every row in one cell), `,` otherwise; `--delimiter` overrides it.
- Returns the number of calls written. `parse_day` turns a bad day into `ValueError` naming
  the option; so does `day_bounds` for a day too far out to be a time (`9999-12-31` reads as
  "until the end").
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Literal, TextIO
from zoneinfo import ZoneInfo

from salesbot_poller.cli.common import EXIT_CONFIG, EXIT_OK, err, utc_now
from salesbot_poller.cli.export_rows import FACT_COLUMNS, csv_rows, json_lines
from salesbot_poller.cli.local_times import LocalTimes
from salesbot_poller.config import Config
from salesbot_poller.store import Store
from salesbot_poller.store.bi import ITEM_FIELDS

Format = Literal["csv", "jsonl"]
BOM = "\ufeff"
DAY = 24 * 3600


def parse_day(value: str, option: str) -> date:
    """`2026-11-01` as a date; `ValueError` naming `option` otherwise."""
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{option}: expected a day like 2026-11-01, got {value!r}") from None


def day_bounds(since: date, until: date, tz: tzinfo) -> tuple[int, int]:
    """[start of `since`, start of the day after `until`) in `tz`, as Unix seconds."""
    if until < since:
        raise ValueError(f"--until: {until} is before --since {since}")
    try:
        start = int(datetime.combine(since, time(), tz).timestamp())
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"--since: {since} is out of range") from None
    try:
        end = int(datetime.combine(until + timedelta(days=1), time(), tz).timestamp())
    except (OverflowError, OSError, ValueError):
        # The last day a date can hold has no next day: its end is a day after its start.
        try:
            end = int(datetime.combine(until, time(), tz).timestamp()) + DAY
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"--until: {until} is out of range") from None
    return start, end


# The IANA zones of Russia (zone.tab, country RU): Excel in these offices expects `;`.
RUSSIAN_ZONES = frozenset(
    [
        "Europe/Kaliningrad",
        "Europe/Moscow",
        "Europe/Kirov",
        "Europe/Volgograd",
        "Europe/Astrakhan",
        "Europe/Saratov",
        "Europe/Ulyanovsk",
        "Europe/Samara",
        "Asia/Yekaterinburg",
        "Asia/Omsk",
        "Asia/Novosibirsk",
        "Asia/Barnaul",
        "Asia/Tomsk",
        "Asia/Novokuznetsk",
        "Asia/Krasnoyarsk",
        "Asia/Irkutsk",
        "Asia/Chita",
        "Asia/Yakutsk",
        "Asia/Khandyga",
        "Asia/Vladivostok",
        "Asia/Ust-Nera",
        "Asia/Magadan",
        "Asia/Sakhalin",
        "Asia/Srednekolymsk",
        "Asia/Kamchatka",
        "Asia/Anadyr",
        "W-SU",
    ]
)
DELIMITERS = {",": ",", ";": ";", "tab": "\t"}


def default_delimiter(zone: str, environ: Mapping[str, str]) -> str:
    """`;` for a Russian zone or locale (see the module contract), `,` otherwise."""
    locale = next((environ[name] for name in ("LC_ALL", "LC_CTYPE", "LANG") if environ.get(name)), "")
    return ";" if zone in RUSSIAN_ZONES or locale.lower().startswith("ru") else ","


def export(
    store: Store,
    since: date,
    until: date,
    tz: tzinfo,
    fmt: Format,
    out: TextIO,
    delimiter: str = ",",
    trackers: Sequence[str] = (),
) -> int:
    """See the module contract. `trackers`: the configured trackers' names (CSV columns)."""
    start, end = day_bounds(since, until, tz)
    when = LocalTimes(tz)
    written = 0
    if fmt == "csv":
        out.write(BOM)
        item_ids = store.export_item_ids(start, end)
        writer = csv.writer(out, delimiter=delimiter)
        columns = [*FACT_COLUMNS, "objections", *(f"item:{item_id}" for item_id in item_ids)]
        writer.writerow([*columns, *(f"tracker:{name}" for name in trackers)])
        for page in store.export_pages(start, end, ("item_id", "verdict")):
            writer.writerows(csv_rows(page, when, item_ids, trackers))
            written += len(page.facts)
    else:
        for page in store.export_pages(start, end, ITEM_FIELDS):
            out.write(json_lines(page, when))
            written += len(page.facts)
    out.flush()
    return written


def run(args: argparse.Namespace, config: Config | None) -> int:
    """`export`: days are in `amocrm.timezone` (else the server's zone); the rows go to
    `--output` (written whole or not at all: a `.part` file renamed) or stdout, the count of
    calls to stderr."""
    assert config is not None  # loaded by `cli.main`
    tz = ZoneInfo(config.amocrm.timezone) if config.amocrm.timezone else datetime.now().astimezone().tzinfo or UTC
    try:
        since = parse_day(args.since, "--since")
        until = parse_day(args.until, "--until") if args.until else utc_now().astimezone(tz).date()
        if until < since:
            raise ValueError(f"--until: {until} is before --since {since}")
    except ValueError as exc:
        err(f"export: {exc}")
        return EXIT_CONFIG
    delimiter = DELIMITERS[args.delimiter] if args.delimiter else default_delimiter(config.amocrm.timezone, os.environ)
    names = [tracker.name for tracker in config.trackers]
    store = Store.open(config.storage.database, int(utc_now().timestamp()))
    try:
        if args.output:
            target = Path(args.output)
            partial = target.with_name(target.name + ".part")  # a failed export leaves no half file
            with partial.open("w", encoding="utf-8", newline="") as out:
                written = export(store, since, until, tz, args.format, out, delimiter, names)
            partial.replace(target)
        else:
            out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="", write_through=False)
            try:
                written = export(store, since, until, tz, args.format, out, delimiter, names)
            finally:
                out.detach()  # stdout stays open for whoever prints next
    except OSError as exc:
        err(f"export: --output: cannot write {args.output}: {exc.strerror}")
        return EXIT_CONFIG
    finally:
        store.close()
    print(f"export: {written} call(s) from {since} to {until}", file=sys.stderr)
    return EXIT_OK
