"""`systemctl stop`, then `backfill` at once: the daemon gives its run lock back as it stops,
even while amoCRM answers 503 with a long Retry-After and a poll sits in its retry wait."""

from __future__ import annotations

import signal
import time

import pytest

from tests.conftest import Servers, run_cli
from tests.test_daemon import wait_for
from tests.test_systemd import start_daemon


@pytest.mark.slow
def test_backfill_right_after_a_stop_gets_the_lock_while_amocrm_was_being_retried(servers: Servers) -> None:
    servers.amo.fail_next(r"/api/v4/events", 503, headers={"Retry-After": "100"}, times=50)
    daemon = start_daemon(servers)
    try:
        wait_for(lambda: servers.amo.count(r"/api/v4/events") >= 1)  # the first poll now waits 100 s to retry
        time.sleep(0.5)
        stopped = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
        took = time.monotonic() - stopped
    finally:
        daemon.kill()
    assert daemon.returncode == 0, err
    assert took < 3, f"the stop took {took:.1f} s: {err}"
    servers.amo.clear_faults()
    today = time.strftime("%Y-%m-%d")
    config = servers.write_config()
    backfill = run_cli("backfill", "--since", today, "--until", today, "--yes", config=config, child=True)
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    assert "looks active" not in backfill.stdout and "another salesbot-poller" not in backfill.stderr
