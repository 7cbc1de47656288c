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
from datetime import UTC, datetime, tzinfo
from typing import Protocol

from salesbot_poller.domain import time_text
from salesbot_poller.errors import Busy, TransientError

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


class AmoPause:
    """Whether amoCRM may be called now; see the module contract."""

    def __init__(self, clock: Callable[[], datetime], state: StateStore | None = None, tz: tzinfo | None = UTC) -> None:
        self._clock = clock
        self._state = state
        self._tz = tz  # the zone its messages show the end of a pause in (the account's)
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
                f"amoCRM calls paused until {time_text(self._until, self._tz)} ({self._reason})",
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
        return time_text(self._until, self._tz)


GROUP_CHAT_PREFIX = "-"  # Telegram: group and supergroup ids are negative, private chats positive


class ChatPacer:
    """Telegram's own limits, per chat, for every thread of the process.

    Contract:
    - At most one message per `gap` seconds to a chat, and at most `group_per_minute` in any
      60 s to a group chat (an id starting with "-").
    - `reserve(chat, urgent)` takes the chat's next slot and returns 0, or returns how many
      seconds to wait before asking again. While an urgent sender (a missed-call alert) waits
      for a chat, nobody else gets that chat's slot.
    - `pause(chat, until)` (a 429, until `now` + its retry_after, in the pipeline's Unix time)
      stops that chat only: `turn(chat, now)` raises `Busy` for it until then.
    - `turn(chat, now, urgent, patience)` waits for a slot up to `patience` seconds, else
      raises `Busy` saying when to come back: a worker never sits out a long wait.
    """

    def __init__(
        self,
        gap: float = 1.0,
        group_per_minute: int = 20,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.gap = gap
        self.group_per_minute = group_per_minute
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._sent: dict[str, deque[float]] = {}  # send times of the last minute, per chat
        self._paused: dict[str, int] = {}  # Unix time (the pipeline's clock), per chat
        self._urgent: dict[str, int] = {}  # urgent senders waiting, per chat

    def _wait(self, chat: str, now: float) -> float:
        sent = self._sent.setdefault(chat, deque())
        while sent and sent[0] <= now - 60:
            sent.popleft()
        wait = sent[-1] + self.gap - now if sent else 0.0
        if chat.startswith(GROUP_CHAT_PREFIX) and len(sent) >= self.group_per_minute:
            wait = max(wait, sent[0] + 60 - now)
        return max(wait, 0.0)

    def reserve(self, chat: str, urgent: bool = False) -> float:
        """See the class contract."""
        with self._lock:
            now = self._clock()
            wait = self._wait(chat, now)
            if wait <= 0 and not urgent and self._urgent.get(chat):
                wait = self.gap / 4  # an alert is waiting for this chat: it goes first
            if wait <= 0:
                self._sent[chat].append(now)
            return wait

    def pause(self, chat: str, until: int) -> None:
        with self._lock:
            self._paused[chat] = max(self._paused.get(chat, 0), until)

    def turn(self, chat: str, now: int, urgent: bool = False, patience: float = 2.0) -> None:
        """Wait for a slot of `chat` up to `patience` seconds; else raise `Busy`."""
        waited = 0.0
        if urgent:
            with self._lock:
                self._urgent[chat] = self._urgent.get(chat, 0) + 1
        try:
            while True:
                with self._lock:  # looked at again after every wait: a 429 may have come meanwhile
                    paused = self._paused.get(chat, 0) - now
                if paused > 0:
                    raise Busy(f"Telegram chat {chat}: paused by a 429 for {paused} s more", paused)
                wait = self.reserve(chat, urgent)
                if wait <= 0:
                    return
                if waited + wait > patience:
                    raise Busy(f"Telegram chat {chat}: sending rate reached, next slot in {wait:.0f} s", wait)
                self._sleep(wait)
                waited += wait
        finally:
            if urgent:
                with self._lock:
                    self._urgent[chat] -= 1
