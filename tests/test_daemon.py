"""The daemon (`run`): first cycle at start, repeated cycles, clean exit on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests.conftest import Servers, assert_no_secret
from tests.fakes import make_mp3


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    """Wait for something the daemon does (not for time to pass); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the daemon did not get there in time"
        time.sleep(0.05)


def add_call(servers: Servers, note_id: int) -> None:
    servers.amo.add_call(
        entity_id=7000 + note_id,
        note_id=note_id,
        duration=60,
        phone=f"+7999000{note_id:04d}",
        link=servers.recordings.add(f"/r/{note_id}.mp3", make_mp3(1.0)),
        created_at=int(time.time()) - 20,
    )


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_cycles_every_interval_and_stops_cleanly(servers: Servers, sig: signal.Signals) -> None:
    add_call(servers, 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESBOT_")}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "salesbot_poller", "--config", str(servers.write_config(interval_seconds=1)), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(servers.telegram.messages) == 1)  # the first cycle runs at start
        add_call(servers, 2)
        wait_for(lambda: len(servers.telegram.messages) == 2)  # a later cycle picks the new call up
        cycles_before = servers.amo.count("/api/v4/events$")
        wait_for(lambda: servers.amo.count("/api/v4/events$") >= cycles_before + 2)  # and it keeps polling
        daemon.send_signal(sig)
        out, err = daemon.communicate(timeout=20)
    finally:
        daemon.kill()
    assert daemon.returncode == 0, err
    assert "started: polling" in err and "stopped" in err and f"received {sig.name}" in err
    assert len(servers.telegram.messages) == 2 and len(servers.openai.transcriptions) == 2
    assert "Traceback" not in err
    assert_no_secret(out, err)
