"""Cycles that fail as a whole: counted, recorded for `status`, logged once per distinct error.

A cycle fails as a whole when something escapes it that is neither a call's nor an event's
own failure (those are confined to their call or event) nor a fatal service error (those
pause the daemon with their own message): a bug, or a database that cannot be written.

Contract of `CycleHealth`:
- `failed(store, now, exc)` counts one more failing cycle in a row and returns the count. The
  first time an error is seen it is logged at ERROR with its traceback; while the same error
  repeats, each cycle logs one WARNING line with the count. The record (error, first and last
  time, count) is stored under `FAILING_KEY` for `status`, best effort: the database may be
  what fails.
- `succeeded(store)` ends a run of failures (one INFO line, the record cleared).
- After `RESTART_AFTER` failing cycles in a row `restart_due` is true: the daemon stops
  feeding systemd's watchdog, so systemd restarts the service.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import peewee

from salesbot_poller.logs import excerpt
from salesbot_poller.store import Store

log = logging.getLogger(__name__)

FAILING_KEY = "failing_cycles"
RESTART_AFTER = 10


def describe(exc: BaseException) -> str:
    """One line for an error: its type and its text, cut."""
    text = " ".join(str(exc).split())
    return excerpt(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, 300)


class CycleHealth:
    """See the module contract. Shared by the lanes of one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.since: int | None = None
        self.last_error: str | None = None

    @property
    def restart_due(self) -> bool:
        return self.count >= RESTART_AFTER

    def failed(self, store: Store, now: int, exc: BaseException) -> int:
        error = describe(exc)
        earlier = failing_record(store) if self.count == 0 else None  # `once` runs: a process each
        with self._lock:
            if earlier:
                self.count, self.since, self.last_error = int(earlier["count"]), int(earlier["since"]), earlier["error"]
            self.count += 1
            self.since = self.since or now
            repeated = error == self.last_error
            self.last_error = error
            count, since = self.count, self.since
        if repeated:
            log.warning("cycle failed again (%d in a row): the same error as logged above: %s", count, error)
        else:
            log.error("cycle failed (%d in a row): %s", count, error, exc_info=exc)
        if count == RESTART_AFTER:
            log.error("%d cycles failed in a row: no more watchdog pings, so systemd restarts the service", count)
        record = {"error": error, "since": since, "at": now, "count": count}
        try:
            store.set_state(FAILING_KEY, json.dumps(record, ensure_ascii=False))
        except peewee.PeeweeException as db_error:  # the database may be the failure itself
            log.warning("could not record the failing cycle: %s", describe(db_error))
        return count

    def succeeded(self, store: Store) -> None:
        with self._lock:
            count, self.count, self.since, self.last_error = self.count, 0, None, None
        earlier = failing_record(store)
        if count or earlier:
            log.info("cycles work again after %s failing cycle(s)", count or (earlier or {}).get("count"))
            store.set_state(FAILING_KEY, "")


def failing_record(store: Store) -> dict[str, Any] | None:
    """The stored run of failing cycles, or None when the last cycle did not fail."""
    raw = store.get_state(FAILING_KEY)
    return json.loads(raw) if raw else None
