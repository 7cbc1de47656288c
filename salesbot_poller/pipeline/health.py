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
- The database's reachability, for every lane: `database_lost(at)` (a lane met a database
  error; a failed cycle with one counts too) starts an outage, `database_back()` (a worker
  reached it again, or a cycle succeeded) ends it. `outage_too_long(at)` is true once it has
  lasted `OUTAGE_RESTART_SECONDS`: the daemon stops feeding the watchdog then too (logged
  once), so a lane that cannot reach the database for long never looks healthy.

`regain_database(store, owner, wait)`: what a worker does after a database error. It tries
again on a new connection, waiting 1 s, then twice as long each time up to
`RECONNECT_MAX_SECONDS`, until the database answers or `wait` says stop; then it gives back
every claim of `owner` (`Store.release_owner`: the call it was working, a claim whose answer
was lost, a delivery row mid-send), so nothing it held waits for a restart or a lease.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import peewee

from salesbot_poller.logs import excerpt
from salesbot_poller.store import Store

log = logging.getLogger(__name__)

FAILING_KEY = "failing_cycles"
RESTART_AFTER = 10
# No lane reached the database for this long: stop feeding the watchdog (a server restart or
# failover takes seconds; this is an outage a restart of ours should at least make visible).
OUTAGE_RESTART_SECONDS = 300
RECONNECT_FIRST_SECONDS = 1.0
RECONNECT_MAX_SECONDS = 30.0


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
        self.unreachable_since: float | None = None  # the database, for some lane
        self._outage_told = False

    @property
    def restart_due(self) -> bool:
        return self.count >= RESTART_AFTER

    def database_lost(self, at: float) -> None:
        with self._lock:
            if self.unreachable_since is None:
                self.unreachable_since = at

    def database_back(self) -> None:
        with self._lock:
            if self._outage_told:
                log.info("the database answers again: watchdog pings resume")
            self.unreachable_since, self._outage_told = None, False

    def outage_too_long(self, at: float) -> bool:
        """Whether a lane has not reached the database for `OUTAGE_RESTART_SECONDS` at `at`."""
        with self._lock:
            since = self.unreachable_since
            too_long = since is not None and at - since >= OUTAGE_RESTART_SECONDS
            tell, self._outage_told = too_long and not self._outage_told, self._outage_told or too_long
        if tell:
            log.error(
                "the database has been unreachable for %d s: no more watchdog pings, so systemd restarts the service",
                OUTAGE_RESTART_SECONDS,
            )
        return too_long

    def failed(self, store: Store, now: int, exc: BaseException) -> int:
        error = describe(exc)
        if isinstance(exc, peewee.PeeweeException):
            self.database_lost(now)
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
        self.database_back()
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


def regain_database(store: Store, owner: str, wait: Callable[[float], bool]) -> int | None:
    """See the module contract: how many claims were given back, or None when `wait(seconds)`
    said stop first (it waits, and returns True to stop: `threading.Event.wait`)."""
    delay = RECONNECT_FIRST_SECONDS
    while not wait(delay):
        try:  # a connection the server dropped is replaced at this statement (`store.postgres`)
            return store.release_owner(owner)
        except peewee.PeeweeException as exc:
            log.debug("the database does not answer yet: %s", describe(exc))
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)
    return None
