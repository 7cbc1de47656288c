"""The daemon's quiet journal: an idle intake pass logs at DEBUG, and one INFO line an hour
says the daemon is alive.

Contract of `Heartbeat` (one per process, on the `App`; the intake lane's thread only):
- `level(busy)`: the level of a pass's summary line: INFO when the pass (or the work lane
  since the last pass) did something, failed or met an error; DEBUG when it was idle. The
  calls' own stage lines and each message sent stay at INFO (`stages`, `delivery`).
- `record(now, new, tz)`: after every pass, with its time (`now`, passed in) and the new
  calls it recorded (the last event is the last pass that recorded one). Once `HEARTBEAT_SECONDS` have passed since
  the first pass or the last heartbeat, it logs one INFO line:
  "idle: 0 calls in 60 min, last event 10:42 Europe/Moscow" (times in `amocrm.timezone`,
  the zone named; "running: 3 calls in 60 min, …" when calls came).
"""

from __future__ import annotations

import logging
from datetime import tzinfo

from salesbot_poller.domain import time_text

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 3600


class Heartbeat:
    """See the module contract."""

    def __init__(self, every: int = HEARTBEAT_SECONDS) -> None:
        self.every = every
        self.since: int | None = None  # the start of the current heartbeat period
        self.calls = 0  # new calls recorded in the period
        self.last_event: int | None = None  # the last pass that read an amoCRM event

    @staticmethod
    def level(busy: bool) -> int:
        return logging.INFO if busy else logging.DEBUG

    def record(self, now: int, new: int, tz: tzinfo | None) -> None:
        if self.since is None:
            self.since = now
        self.calls += new
        if new:
            self.last_event = now
        if now - self.since < self.every:
            return
        minutes = round((now - self.since) / 60)
        last = time_text(self.last_event, tz, "%H:%M") if self.last_event is not None else "none since the start"
        state = "running" if self.calls else "idle"
        log.info("%s: %d calls in %d min, last event %s", state, self.calls, minutes, last)
        self.since, self.calls = now, 0
