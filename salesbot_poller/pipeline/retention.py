"""Retention: personal data older than `storage.retention_days` is removed, once a day, in a
lane of its own that never delays a poll or an alert.

Contract of `run(app, now, should_stop, budget)` (the daemon's retention job every
`RUN_EVERY_SECONDS`; `once` after its cycle):
- A pass is due when `storage.retention_days` > 0 and no pass finished yet on today's date
  (in the account's zone): a finished pass is recorded under the State key `retention` (its
  time, the cutoff and what it removed), so it runs once a day across restarts. A dry run
  removes nothing. When nothing is due, a run reads two State rows and returns.
- Calls that happened (event time) more than `retention_days` ago lose their personal data
  (`Store.clear_personal`): transcript, recording link, number, entity name, the analysis'
  quotes and paraphrases, the content of their delivery rows. Kept: what reports need
  (durations, scores, verdicts, manager, entity ids, usage). Rows about no call (digests,
  storm summaries) stored before the cutoff are blanked too.
- A pass walks the calls still holding personal data by an indexed keyset, (event time, id)
  after the last call done (`Store.calls_to_clear`): no batch reads a call already cleared,
  whatever the history. Each batch of `BATCH` calls and the pass' position (State key
  `retention_pass`: its cutoff, keyset, counts, and the calls due when it began) are ONE
  transaction, so the write lock is held for one batch only and a stop or a restart goes on
  from the last batch committed. Between batches the lane pauses as long as the batch took,
  so the other lanes' writes get in.
- A run works batches until `budget` seconds are spent (or `should_stop()` says yes), then
  yields: the pass goes on at the next run. The first pass over a large history thus takes
  several runs, none of them holding any other lane.
- A call a worker holds when its batch is read is passed over, and cleared by the next
  day's pass.
- At the end of a pass, recordings left in `storage.audio_dir` (`call-*`, whatever
  `keep_audio` says) older than the cutoff are deleted.
- Every run (whatever `retention_days` says), the audio kept for quote clips longer than
  `storage.clip_days` is deleted (`expire_clips`), and calls stored before their numbers
  were keyed get their key (`Store.fill_phone_keys`: `/find <number>` finds them at once).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from salesbot_poller import phones
from salesbot_poller.domain import local_time
from salesbot_poller.pipeline.context import App
from salesbot_poller.services import clip_files

log = logging.getLogger(__name__)

STATE_KEY = "retention"  # the last finished pass
PASS_KEY = "retention_pass"  # the pass under way, if any
# About 2 ms of writes per call (its BI rows rewritten): ~0.2 s of write lock per batch.
BATCH = 100
RUN_BUDGET_SECONDS = 30.0  # one run's work; the rest of a long first pass waits for the next run
RUN_EVERY_SECONDS = 120  # the daemon's retention job; a run with nothing due costs two reads
MIN_PAUSE_SECONDS = 0.05  # between batches, at least: other writers get the lock
DAY = 24 * 3600
REASON = "personal data removed after storage.retention_days"


@dataclass
class Removed:
    """One pass of retention: under way (`PASS_KEY`) or finished (`STATE_KEY`)."""

    at: int = 0  # when it finished
    day: str = ""  # the local date it finished on
    cutoff: int = 0
    calls: int = 0
    messages: int = 0  # delivery rows blanked
    audio_files: int = 0
    started_at: int = 0
    due: int = 0  # calls before the cutoff still holding personal data when the pass began
    after_at: int = -1  # the keyset: the last call done, (event time, id)
    after_id: int = 0


def _parse(raw: str | None) -> Removed | None:
    if not raw:
        return None
    data = json.loads(raw)
    return Removed(**{name: data[name] for name in Removed.__dataclass_fields__ if name in data})


def last_run(raw: str | None) -> Removed | None:
    """The last finished pass (the State value `retention`), if any."""
    return _parse(raw)


def under_way(raw: str | None) -> Removed | None:
    """The pass under way (the State value `retention_pass`), if any."""
    return _parse(raw)


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


def _never() -> bool:
    return False


def advance(
    app: App,
    done: Removed,
    now: int,
    should_stop: Callable[[], bool] = _never,
    deadline: float | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    save: bool = True,
) -> bool:
    """Clear `done`'s pass batch by batch from its keyset, each batch committed with the pass'
    position (`save`: under `PASS_KEY`); True once nothing before its cutoff is left, False
    when stopped or past `deadline` (a `clock` time) first. Audio is left to the caller."""
    store = app.store
    while True:
        if should_stop() or (deadline is not None and clock() >= deadline):
            return False
        started = clock()
        with store.db.atomic():  # the batch and the position past it: a restart goes on from here
            batch = store.calls_to_clear(done.cutoff, BATCH, (done.after_at, done.after_id))
            if batch:
                _, blanked = store.clear_personal(batch, now, REASON)
                done.calls += len(batch)
                done.messages += blanked
                done.after_at, done.after_id = int(batch[-1].event_created_at), int(batch[-1].id)
            else:
                blanked = store.clear_unlinked_before(done.cutoff, now, BATCH)
                done.messages += blanked
            if save and (batch or blanked):
                store.set_state(PASS_KEY, json.dumps(asdict(done)))
        if not batch and not blanked:
            return True
        app.stopping.wait(max(MIN_PAUSE_SECONDS, clock() - started))


def clear_before(app: App, cutoff: int, now: int, should_stop: Callable[[], bool] = _never) -> Removed | None:
    """Remove personal data of everything before `cutoff` at once (no budget, no State);
    None if stopped before the end (what was done stays done)."""
    done = Removed(at=now, cutoff=cutoff, started_at=now)
    if not advance(app, done, now, should_stop, save=False):
        return None
    done.audio_files = remove_old_audio(Path(app.config.storage.audio_dir), cutoff)
    return done


def run(
    app: App,
    now: int,
    should_stop: Callable[[], bool] = _never,
    budget: float | None = RUN_BUDGET_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> Removed | None:
    """See the module contract: the pass it finished, or None (nothing due, or the pass goes
    on at the next run). `budget` None: until the pass is done."""
    if app.dry_run is None:  # every run: a call's clip audio expires on its own clock
        expire_clips(app, now)
        # Calls stored before 0024_phone_key get their number's key here, in the background,
        # so `/find <number>` never pays for it (24 s once at 1M calls); then an empty probe.
        app.store.fill_phone_keys(phones.key)
    days = app.config.storage.retention_days
    if not days or app.dry_run is not None:
        return None
    store = app.store
    deadline = None if budget is None else clock() + budget
    done = under_way(store.get_state(PASS_KEY))
    today = local_time(now, app.tz).date().isoformat()
    if done is None:
        previous = last_run(store.get_state(STATE_KEY))
        if previous is not None and previous.day == today:
            return None
        cutoff = now - days * DAY
        done = Removed(cutoff=cutoff, started_at=now, due=store.calls_due(cutoff))
        store.set_state(PASS_KEY, json.dumps(asdict(done)))
    if not advance(app, done, now, should_stop, deadline, clock=clock):
        log.info(
            "retention: %d of ~%d old call(s) cleared so far; the pass goes on at the next run", done.calls, done.due
        )
        return None
    done.audio_files = remove_old_audio(Path(app.config.storage.audio_dir), done.cutoff)
    done.at, done.day = now, today
    with store.db.atomic():
        store.set_state(STATE_KEY, json.dumps(asdict(done)))
        store.set_state(PASS_KEY, "")
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
