"""`salesbot-poller trackers [--apply --since DAY [--until DAY]]`.

Contract of `run(args, config)`:
- Without `--apply`: the configured trackers, one line each (speaker, alert, expect, phrases),
  and the calls of the last 30 days with a hit of each.
- With `--apply`: the CURRENT trackers over the stored transcripts of the calls that happened
  from the start of `--since` to the end of `--until` (default today; days in the account's
  zone, as `export`), replacing each call's hits and misses (`pipeline.tracking.reapply`): no
  model request, no alert. A progress line per page goes to stderr; an interrupted run
  continues where it stopped when run again; a finished one says "nothing to do".
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from salesbot_poller.cli.common import EXIT_CONFIG, EXIT_OK, err, utc_now
from salesbot_poller.cli.export import day_bounds, parse_day
from salesbot_poller.config import Config
from salesbot_poller.pipeline import tracking
from salesbot_poller.store import Store
from salesbot_poller.trackers import Matcher

RECENT_DAYS = 30


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace, config: Config | None) -> int:
    """See the module contract."""
    assert config is not None  # loaded by `cli.main`
    tz = ZoneInfo(config.amocrm.timezone) if config.amocrm.timezone else datetime.now().astimezone().tzinfo or UTC
    now = utc_now()
    if not args.apply:
        if args.since or args.until:
            err("trackers: --since and --until go with --apply")
            return EXIT_CONFIG
        return _list(config, int(now.timestamp()))
    if not args.since:
        err("trackers: --apply needs --since DAY (e.g. --since 2026-11-01)")
        return EXIT_CONFIG
    try:
        since = parse_day(args.since, "--since")
        until = parse_day(args.until, "--until") if args.until else now.astimezone(tz).date()
        start, end = day_bounds(since, until, tz)
    except ValueError as exc:
        err(f"trackers: {exc}")
        return EXIT_CONFIG
    if not config.trackers:
        err("trackers: no [[trackers]] in the config: nothing to apply")
        return EXIT_CONFIG
    store = Store.open(config.storage.database, int(now.timestamp()))
    try:
        matched = tracking.reapply(store, config, Matcher(config.trackers), start, end, _progress)
    finally:
        store.close()
    if matched is None:
        print(f"trackers: nothing to do: the current trackers were applied to {since} – {until} already")
    else:
        print(f"trackers: applied to {matched} call(s) from {since} to {until}; no alert sent")
    return EXIT_OK


def _list(config: Config, now: int) -> int:
    if not config.trackers:
        print("trackers: none configured ([[trackers]] in the config: docs/trackers.md)")
        return EXIT_OK
    store = Store.open(config.storage.database, now)
    try:
        counts = store.tracker_call_counts(now - RECENT_DAYS * 24 * 3600, now + 1)
    finally:
        store.close()
    for tracker in config.trackers:
        flags = [f"speaker={tracker.speaker}"] + [flag for flag in ("alert", "expect") if getattr(tracker, flag)]
        print(
            f"{tracker.name}: {counts.get(tracker.name, 0)} call(s) in {RECENT_DAYS} days · {' '.join(flags)} · "
            + "; ".join(tracker.phrases)
        )
    return EXIT_OK
