"""How fast, and whether at all, the process may call amoCRM.

amoCRM allows 7 requests per second per IP and answers repeated excess by blocking the IP
(403) until its support lifts it. So the limit is kept on our side, never learnt from 429s.

Contract of `RateLimiter`:
- Every request holds a slot (`with limiter.slot(): send`). At most `max_rps` slots are
  either in flight or were released less than `window` seconds ago, for every thread of the
  process that shares the limiter (the composition root builds one per process).
- A slot counts from its RELEASE (the answer has arrived), not from its start: the server
  saw the request somewhere between our send and our receipt, so with this rule any
  `max_rps + 1` requests reach the server more than `window` apart, whatever the latency.
- The clock and the sleep are injected, so tests run it without real waiting.

Contract of `AmoPause`:
- `pause(seconds, reason)` stops every amoCRM call until then; it is kept in the state table
  (when given one), so a restart honours it too. `check()` raises `AmoPaused` meanwhile.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Protocol

from salesbot_poller.errors import TransientError

log = logging.getLogger(__name__)

PAUSE_STATE_KEY = "amocrm_paused_until"
_BUSY_POLL_SECONDS = 0.05  # every slot is in flight (other threads): look again shortly


class RateLimiter:
    """At most `max_rps` requests in any rolling `window`; see the module contract."""

    def __init__(
        self,
        max_rps: int,
        window: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_rps < 1:
            raise ValueError("max_rps must be at least 1")
        self.max_rps = max_rps
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._released: deque[float] = deque()  # release times within the last window
        self._in_flight = 0

    def _wait_needed(self) -> float:
        """Take a slot and return 0, or return how long to wait before asking again."""
        now = self._clock()
        while self._released and self._released[0] <= now - self.window:
            self._released.popleft()
        if self._in_flight + len(self._released) < self.max_rps:
            self._in_flight += 1
            return 0.0
        if self._released:
            return self._released[0] + self.window - now  # > 0: older releases were dropped
        return _BUSY_POLL_SECONDS

    def acquire(self) -> None:
        """Block until a slot is free and take it; pair with `release`."""
        while True:
            with self._lock:
                wait = self._wait_needed()
            if not wait:
                return
            self._sleep(wait)  # never while holding the lock: a release must get through

    def release(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._released.append(self._clock())

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot for one request (released even when the request raises)."""
        self.acquire()
        try:
            yield
        finally:
            self.release()


class StateStore(Protocol):
    """The small key-value state of `store.Store`."""

    def get_state(self, key: str) -> str | None: ...

    def set_state(self, key: str, value: str) -> None: ...


class AmoPaused(TransientError):
    """amoCRM is not called until a pause ends (after a 403, or a long Retry-After)."""


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


class AmoPause:
    """Whether amoCRM may be called now; see the module contract."""

    def __init__(self, clock: Callable[[], datetime], state: StateStore | None = None) -> None:
        self._clock = clock
        self._state = state
        self._until = 0.0
        self._reason = ""

    def _now(self) -> float:
        return self._clock().timestamp()

    def _load(self) -> None:
        if self._state is None:
            return
        raw = self._state.get_state(PAUSE_STATE_KEY)
        if not raw:
            return
        try:
            data = json.loads(raw)
            until, reason = float(data["until"]), str(data.get("reason", ""))
        except (ValueError, KeyError, TypeError):
            return  # unreadable: no pause rather than a bot stopped for good
        if until > self._until:
            self._until, self._reason = until, reason

    def check(self) -> None:
        """Raise `AmoPaused` while a pause lasts."""
        self._load()  # another process (or a restart) may have set it
        remaining = self._until - self._now()
        if remaining > 0:
            raise AmoPaused(
                f"amoCRM calls paused until {_utc(self._until)} ({self._reason})",
                retry_after=remaining,
            )

    def pause(self, seconds: float, reason: str) -> float:
        """Pause every amoCRM call for `seconds`; returns when the pause ends (Unix time)."""
        until = self._now() + seconds
        if until > self._until:
            self._until, self._reason = until, reason
            if self._state is not None:
                self._state.set_state(PAUSE_STATE_KEY, json.dumps({"until": until, "reason": reason}))
        return self._until

    def until_text(self) -> str:
        return _utc(self._until)
