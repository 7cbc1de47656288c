"""`--dry-run` on `once` and `run`: the whole pipeline, but messages and amoCRM writes are
printed instead of sent, and nothing is marked notified. The real CLI, loopback servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import Servers, assert_no_secret, run_cli
from tests.test_daemon import wait_for
from tests.test_end_to_end import seed


def config_with_writes(servers: Servers) -> str:
    text = servers.config_text().replace("[openai]", "write_back = true\ncreate_tasks = true\n[openai]", 1)
    return text.replace("[poller]", "attach_transcript = true\n[poller]", 1)


@pytest.mark.slow
def test_once_dry_run_prints_and_sends_nothing_then_a_real_run_sends(servers: Servers) -> None:
    seed(servers, int(time.time()))
    config = servers.tmp / "config.toml"
    config.write_text(config_with_writes(servers))

    dry = run_cli("once", "--dry-run", config=config)
    assert dry.returncode == 0, dry.stderr
    assert servers.telegram.messages == [] and servers.telegram.documents == []
    assert servers.amo.created_notes == [] and servers.amo.tasks == []
    out = dry.stdout
    assert out.count("--- dry run: card -> default chat") == 2 and out.count("--- dry run: alert") == 1
    assert out.count("--- dry run: transcript") == 2 and "POST /api/v4/leads/notes" in out
    assert "POST /api/v4/tasks" in out and "Оценка" in out and "+7 999 111-00-04" in out
    # As the chat shows the card: no markup, entities decoded, the link's target after its text.
    assert "<b>" not in out and "&lt;" not in out and "&amp;" not in out and "&quot;" not in out
    assert "⭐ Оценка: " in out and "💼 Сделка: ООО <Ромашка> & Partners (http://127.0.0.1:" in out
    assert "[document " in out, "the transcript: one line naming the file, then its caption"
    assert len(servers.openai.chat_requests) == 2, "the whole pipeline ran: analysed (and stored)"

    status = run_cli("status", config=config)
    assert "analysed        2" in status.stdout and "missed          1" in status.stdout
    assert "  notified" not in status.stdout and "missed_alerted" not in status.stdout, "nothing marked notified"

    real = run_cli("once", config=config)
    assert real.returncode == 0, real.stderr
    assert len(servers.telegram.messages) == 3 and len(servers.telegram.documents) == 2
    assert len(servers.amo.created_notes) == 2 and len(servers.openai.chat_requests) == 2, "not analysed again"
    assert_no_secret(dry.stdout, dry.stderr, real.stdout, real.stderr)


@pytest.mark.slow
def test_run_dry_run_prints_each_message_once_across_cycles(servers: Servers) -> None:
    seed(servers, int(time.time()))
    config = servers.write_config(interval_seconds=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESBOT_")}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "salesbot_poller", "--config", str(config), "run", "--dry-run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(servers.openai.chat_requests) == 2)
        cycles = servers.amo.count("/api/v4/events$")
        wait_for(lambda: servers.amo.count("/api/v4/events$") >= cycles + 2)
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=20)
    finally:
        daemon.kill()
    assert daemon.returncode == 0, err
    assert out.count("--- dry run: card") == 2 and out.count("--- dry run: alert") == 1
    assert servers.telegram.messages == []
    assert_no_secret(out, err)
