"""The one bounded-retry policy for HTTP calls within a cycle (tenacity).

Only `TransientError` is retried, and not `Unreadable` (asked again, it answers the same).
The wait honours the server's `retry_after` when it gave one, else grows exponentially with
jitter. The whole retry stops before `max_seconds` would be exceeded: what is still failing
then is left to a later cycle, never looped on here.

A retry's wait is cut short when the process stops (`until_stopped`): it raises `Stopped`, a
`Busy`, so a call is put off without counting a failed attempt and the daemon exits (and
gives back its run lock) at once instead of after the wait.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import tenacity
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from salesbot_poller.errors import Busy, TransientError, Unreadable

log = logging.getLogger(__name__)


class Stopped(Busy):
    """A wait cut short because the process is stopping (see the module docstring)."""


def until_stopped(stopping: threading.Event) -> Callable[[float], None]:
    """A `sleep` that raises `Stopped` as soon as `stopping` is set (or already is)."""

    def sleep(seconds: float) -> None:
        if stopping.wait(seconds):
            raise Stopped("stopping: a retry's wait was cut short; the next start tries again")

    return sleep


class wait_retry_after(wait_base):
    """The server's `retry_after` if the error carries one, else the fallback wait."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self.fallback(retry_state))


class stop_before_budget(stop_base):
    """Stop when the next sleep would end past `max_seconds` since the first attempt.

    Time is the larger of the wall time and the sum of the waits: with an injected `sleep`
    (tests) the waits still count, so the budget is checked without waiting for it.
    """

    def __init__(self, max_seconds: float) -> None:
        self.max_seconds = max_seconds

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        elapsed = max(retry_state.seconds_since_start or 0.0, retry_state.idle_for)
        return elapsed + retry_state.upcoming_sleep > self.max_seconds


def _worth_retrying(exc: BaseException) -> bool:
    return isinstance(exc, TransientError) and not isinstance(exc, Unreadable)


def bounded_retry(attempts: int, max_seconds: float, sleep: Callable[[float], None] | None = None) -> tenacity.Retrying:
    """A `Retrying` to call as `retrying(fn, *args)`; `sleep` is injectable for tests."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(
            lambda exc: isinstance(exc, TransientError) and not isinstance(exc, Unreadable)
        ),
        stop=tenacity.stop_after_attempt(attempts) | stop_before_budget(max_seconds),
        wait=wait_retry_after(tenacity.wait_exponential_jitter(1, max=30, jitter=1)),
        before_sleep=tenacity.before_sleep_log(log, logging.WARNING),
        sleep=sleep or time.sleep,
        reraise=True,
    )
