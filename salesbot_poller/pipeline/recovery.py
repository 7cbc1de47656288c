"""What a restart needs: the files a crash left, and one process per database.

Contract (where a failed call resumes is `Store.resume_stage`):
- `sweep_audio(app)` deletes partial downloads and, unless `storage.keep_audio`, recordings
  no call is waiting to transcribe. Call it at start only, before any lane runs.
- `exclusive(database_url)` holds a lock while calls are processed: beside the SQLite file,
  or a PostgreSQL advisory lock (`store.postgres.run_lock`). A second `once`/`run` on the
  same database would send and pay for the same calls twice, so it is refused with a
  `FatalError`. The lock dies with its process (even on kill -9).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from salesbot_poller.config import safe_url
from salesbot_poller.domain import Stage
from salesbot_poller.errors import FatalError
from salesbot_poller.pipeline.context import App
from salesbot_poller.store import PRIVATE_FILE, make_private, sqlite_file
from salesbot_poller.store.postgres import is_postgres, run_lock

log = logging.getLogger(__name__)


def sweep_audio(app: App) -> list[Path]:
    """Delete what a crash left in `audio_dir`: partial downloads, the preparation work
    directories of an interrupted transcription, and (unless `storage.keep_audio`)
    recordings no call is waiting to transcribe. Returns what went.

    A waiting recording keeps its sidecars (`<name>.pieces.json`: the chunks already paid
    for). Safe only at start, before the lanes run: then no download or upload is running.
    """
    directory = Path(app.config.storage.audio_dir)
    if not directory.is_dir():
        return []
    waiting = {Path(call.audio_path).name for call in app.store.due_calls(2**62, [Stage.DOWNLOADED]) if call.audio_path}
    removed = []
    for path in directory.iterdir():
        if not path.name.startswith("call-"):
            continue
        if path.is_dir():  # a TemporaryDirectory of `speech` that a kill left behind
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            continue
        owner = path.name.split(".pieces.json")[0]
        stray = path.suffix == ".part" or (not app.config.storage.keep_audio and owner not in waiting)
        if path.is_file() and stray:
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.info("removed %d file(s) left in %s by an interrupted run", len(removed), directory)
    return removed


@contextmanager
def exclusive(database_url: str) -> Iterator[bool]:
    """Hold `<database file>.lock` (flock), or PostgreSQL's advisory lock, for the block; see
    the module contract. Yields True when a lock is held (False: a database with neither, where
    one instance at a time is the admin's job)."""
    if is_postgres(database_url):
        with run_lock(database_url) as taken:
            if not taken:
                raise FatalError(
                    f"another salesbot-poller (once or run) is processing calls with {safe_url(database_url)}: "
                    "stop it first (two at once would post and pay for the same calls twice)"
                )
            yield True
        return
    file = sqlite_file(database_url)
    if file is None:  # another server database: one instance is the admin's job
        yield False
        return
    lock = file.with_name(file.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    make_private(lock, PRIVATE_FILE)  # a lock file an older version left 0644
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FatalError(
                f"another salesbot-poller (once or run) is processing calls with {file}: "
                "stop it first (two at once would post and pay for the same calls twice)"
            ) from None
        yield True
    finally:
        os.close(fd)  # releases the lock
