"""Retention: personal data older than `storage.retention_days` is removed, once a day.

Contract of `run(app, cycle, should_stop)` (each intake pass, `once` included):
- Due when `storage.retention_days` > 0 and no run finished yet on today's date (in the
  account's zone); the finished run is recorded under the State key `retention` (its time,
  the cutoff and what it removed), so it runs once a day across restarts. A dry run removes
  nothing.
- Calls that happened (event time) more than `retention_days` ago lose their personal data
  (`Store.clear_personal`): transcript, recording link, number, entity name, the analysis'
  quotes and paraphrases, the content of their delivery rows. Kept: what reports need
  (durations, scores, verdicts, manager, entity ids, usage). Rows about no call (digests,
  storm summaries) stored before the cutoff are blanked too.
- In batches of `BATCH` calls, one transaction each: the write lock is never held long. A
  stop between batches leaves the rest for the next pass (each call is marked when done).
- Recordings left in `storage.audio_dir` (`call-*`, whatever `keep_audio` says) older than
  the cutoff are deleted.
- Every pass (not only once a day, and whatever `retention_days` says), the audio kept for
  quote clips longer than `storage.clip_days` is deleted (`expire_clips`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from salesbot_poller.domain import local_time
from salesbot_poller.pipeline.context import App, Cycle
from salesbot_poller.services import clip_files

log = logging.getLogger(__name__)

STATE_KEY = "retention"
BATCH = 200
DAY = 24 * 3600
REASON = "personal data removed after storage.retention_days"


@dataclass
class Removed:
    """What one retention run removed."""

    at: int = 0
    day: str = ""
    cutoff: int = 0
    calls: int = 0
    messages: int = 0  # delivery rows blanked
    audio_files: int = 0


def last_run(raw: str | None) -> Removed | None:
    """The recorded run (the State value `retention`), if any."""
    if not raw:
        return None
    data = json.loads(raw)
    return Removed(**{name: data[name] for name in Removed.__dataclass_fields__ if name in data})


def remove_old_audio(directory: Path, cutoff: int) -> int:
    """Delete `call-*` files in `directory` last modified before `cutoff`; how many."""
    if not directory.is_dir():
        return 0
    removed = 0
    for path in directory.glob("call-*"):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError as exc:
            log.warning("retention: cannot remove %s: %s", path.name, exc.strerror)
    return removed


def expire_clips(app: App, now: int) -> int:
    """Delete the quote clips' audio kept longer than `storage.clip_days` (never longer than
    `retention_days` keeps personal data); how many calls' audio went."""
    days = clip_files.keep_days(app.config.storage.clip_days, app.config.storage.retention_days)
    removed = clip_files.delete_expired_clips(Path(app.config.storage.audio_dir), now, days)
    if removed:
        log.info("retention: the clip audio of %d call(s) kept over %d day(s) deleted", removed, days)
    return removed


def clear_before(app: App, cutoff: int, now: int, should_stop: Callable[[], bool] = lambda: False) -> Removed | None:
    """Remove personal data of everything before `cutoff`, batch by batch; None if stopped
    before the end (what was done stays done)."""
    done = Removed(at=now, cutoff=cutoff)
    store = app.store
    while batch := store.calls_to_clear(cutoff, BATCH):
        _, blanked = store.clear_personal(batch, now, REASON)
        done.calls += len(batch)
        done.messages += blanked
        if should_stop():
            return None
    while blanked := store.clear_unlinked_before(cutoff, now, BATCH):
        done.messages += blanked
        if should_stop():
            return None
    done.audio_files = remove_old_audio(Path(app.config.storage.audio_dir), cutoff)
    return done


def run(app: App, cycle: Cycle, should_stop: Callable[[], bool] = lambda: False) -> Removed | None:
    """See the module contract; returns what was removed when it ran."""
    if app.dry_run is None:  # every pass: a call's clip audio expires on its own clock
        expire_clips(app, cycle.now)
    days = app.config.storage.retention_days
    if not days or app.dry_run is not None:
        return None
    today = local_time(cycle.now, app.tz).date().isoformat()
    previous = last_run(app.store.get_state(STATE_KEY))
    if previous is not None and previous.day == today:
        return None
    done = clear_before(app, cycle.now - days * DAY, cycle.now, should_stop)
    if done is None:
        log.info("retention: stopped midway; the rest is removed in a later pass")
        return None
    done.day = today
    app.store.set_state(STATE_KEY, json.dumps(asdict(done)))
    log.log(
        logging.INFO if done.calls or done.messages or done.audio_files else logging.DEBUG,  # a quiet day: no line
        "retention: personal data of %d call(s) older than %d day(s) removed, %d message(s) blanked, "
        "%d audio file(s) deleted",
        done.calls,
        days,
        done.messages,
        done.audio_files,
    )
    return done
