"""The client-side limits on amoCRM: the rolling-window rate limiter and the pause, with an
injected clock and sleep (nothing waits for real)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from salesbot_poller.config import parse_config
from salesbot_poller.errors import ConfigError
from salesbot_poller.services.throttle import PAUSE_STATE_KEY, AmoPause, AmoPaused, RateLimiter


class FakeTime:
    """A monotonic clock that only moves when something sleeps (or a test moves it)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "the limiter never sleeps for nothing"
        self.sleeps.append(seconds)
        self.now += seconds


def most_in_any_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    best, start = 0, 0
    for i, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, i - start + 1)
    return best


def test_seven_go_at_once_and_the_eighth_waits_a_second_after_the_first_answer() -> None:
    t = FakeTime()
    limiter = RateLimiter(7, clock=t.monotonic, sleep=t.sleep)
    starts, ends = [], []
    for _ in range(22):
        with limiter.slot():
            starts.append(t.now)
            t.now += 0.05  # the request's round trip
            ends.append(t.now)
    assert starts[6] - starts[0] == pytest.approx(0.30)  # no wait for the first seven
    assert starts[7] == pytest.approx(ends[0] + 1.0)
    for j in range(7, len(starts)):
        assert starts[j] >= ends[j - 7] + 1.0 - 1e-9


def test_the_server_never_sees_more_than_max_rps_whatever_the_latency() -> None:
    """A request reaches the server some time between our send and its answer."""
    t = FakeTime()
    rng = random.Random(3)
    limiter = RateLimiter(7, clock=t.monotonic, sleep=t.sleep)
    arrivals = []
    for _ in range(300):
        with limiter.slot():
            latency = rng.choice([0.001, 0.02, 0.3, 0.9])
            arrivals.append(t.now + rng.uniform(0, latency))
            t.now += latency
    assert most_in_any_window(arrivals) == 7


def test_requests_in_flight_hold_their_slots() -> None:
    t = FakeTime()
    released: list[float] = []

    def sleep(seconds: float) -> None:
        t.sleep(seconds)
        if not released:  # another thread's request answers while this one waits
            released.append(t.now)
            limiter.release()

    limiter = RateLimiter(2, clock=t.monotonic, sleep=sleep)
    limiter.acquire()
    limiter.acquire()
    limiter.acquire()  # both slots in flight: waits for a release, then one second more
    assert t.now >= released[0] + 1.0


def test_a_slot_is_given_back_when_the_request_raises() -> None:
    t = FakeTime()
    limiter = RateLimiter(1, clock=t.monotonic, sleep=t.sleep)
    with pytest.raises(OSError), limiter.slot():
        raise OSError("connection reset")
    with limiter.slot():
        pass
    assert t.sleeps == [pytest.approx(1.0)]


def test_max_rps_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_rps"):
        RateLimiter(0)


class MemoryState:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get_state(self, key: str) -> str | None:
        return self.values.get(key)

    def set_state(self, key: str, value: str) -> None:
        self.values[key] = value


def test_a_pause_is_kept_in_the_state_and_honoured_after_a_restart() -> None:
    now = [datetime(2026, 11, 25, 10, 0, tzinfo=UTC)]
    state = MemoryState()
    AmoPause(lambda: now[0], state).pause(600, "HTTP 403 on /api/v4/events")
    restarted = AmoPause(lambda: now[0], state)
    with pytest.raises(AmoPaused, match="paused until 2026-11-25 10:10 UTC") as caught:
        restarted.check()
    assert caught.value.retry_after == 600
    now[0] += timedelta(seconds=601)
    restarted.check()  # over: no error


def test_an_unreadable_pause_is_no_pause() -> None:
    state = MemoryState()
    state.values[PAUSE_STATE_KEY] = "<html>"
    AmoPause(lambda: datetime.now(UTC), state).check()


def test_a_shorter_pause_does_not_shorten_a_longer_one() -> None:
    now = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    pause = AmoPause(lambda: now, MemoryState())
    pause.pause(600, "403")
    assert pause.pause(5, "Retry-After") == now.timestamp() + 600


def config_with(**amocrm: object) -> dict[str, object]:
    return {
        "amocrm": {"base_url": "https://acme.amocrm.ru", "long_lived_token": "t", **amocrm},
        "openai": {"api_key": "k"},
        "telegram": {"bot_token": "1:x", "chat_id": "-1"},
    }


def test_max_rps_defaults_to_7_and_never_exceeds_it() -> None:
    assert parse_config(config_with(), {}).amocrm.max_rps == 7
    assert parse_config(config_with(), {"SALESBOT_AMOCRM_MAX_RPS": "3"}).amocrm.max_rps == 3
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(max_rps=10), {})
    assert caught.value.problems == ["amocrm.max_rps: Input should be less than or equal to 7"]
