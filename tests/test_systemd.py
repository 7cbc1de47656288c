"""systemd integration and shutdown: the notify protocol over a real AF_UNIX datagram socket,
the daemon's READY / WATCHDOG / STOPPING and its stop within the grace period, and what
starves the watchdog (a database no lane reaches) or does not (a worker regaining it)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest

from salesbot_poller.cli.daemon import Progress
from salesbot_poller.cli.sdnotify import SystemdNotifier
from salesbot_poller.domain import CallEvent, Stage
from salesbot_poller.pipeline.health import OUTAGE_RESTART_SECONDS, CycleHealth, regain_database
from salesbot_poller.store import Call, Store
from tests.conftest import Servers, assert_no_secret
from tests.test_daemon import add_call, wait_for


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(30)
    try:
        yield sock, path
    finally:
        sock.close()


def receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_notify_sends_one_datagram_to_a_path_socket(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.notify("READY=1", "STATUS=polling")
    assert receive(sock) == "READY=1\nSTATUS=polling"


def test_notify_supports_abstract_sockets() -> None:
    name = f"salesbot-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert SystemdNotifier.from_environ({"NOTIFY_SOCKET": "@" + name}).notify("WATCHDOG=1")
        assert receive(sock) == "WATCHDOG=1"


def test_without_notify_socket_it_is_a_no_op_and_a_dead_socket_never_raises(tmp_path: Path) -> None:
    assert not SystemdNotifier.from_environ({}).enabled
    assert SystemdNotifier.from_environ({}).notify("READY=1") is False
    gone = SystemdNotifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert gone.notify("READY=1") is False and gone.notify("READY=1") is False


@pytest.mark.slow
def test_a_listener_that_does_not_read_never_blocks_notify(notify_socket: tuple[socket.socket, str]) -> None:
    _, path = notify_socket  # bound, never read: its queue fills up after a few datagrams
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})
    sent: list[bool] = []
    # 10 fit the queue (net.unix.max_dgram_qlen), 3 more must each give up after SEND_TIMEOUT.
    sender = threading.Thread(target=lambda: sent.extend(notifier.notify(f"STATUS={n}") for n in range(13)))
    sender.daemon = True  # without the timeout it would block for ever
    sender.start()
    sender.join(timeout=20)
    assert not sender.is_alive(), "notify waited for a listener that does not read"
    assert sent[0] and sent[-1] is False, "the first datagrams are queued, the ones over the queue are dropped"


def test_watchdog_interval_only_for_this_process() -> None:
    mine = SystemdNotifier.from_environ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_seconds == 30.0
    assert SystemdNotifier.from_environ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_seconds is None
    assert SystemdNotifier.from_environ({"WATCHDOG_USEC": "0"}).watchdog_seconds is None


def test_progress_is_healthy_while_idle_or_moving_and_not_when_stuck() -> None:
    clock = [100.0]
    progress = Progress(lambda: clock[0])
    clock[0] = 5000.0
    assert progress.healthy(stall_seconds=60), "idle between cycles"
    progress.begin()
    clock[0] += 50
    progress.tick()
    clock[0] += 50
    assert progress.healthy(stall_seconds=60)
    clock[0] += 20
    assert not progress.healthy(stall_seconds=60), "70 s without progress in a cycle"
    progress.end()
    assert progress.healthy(stall_seconds=60)


def start_daemon(servers: Servers, **env: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SALESBOT_", "NOTIFY_", "WATCHDOG_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "salesbot_poller", "--config", str(servers.write_config(interval_seconds=1)), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ | env,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_daemon_tells_systemd_ready_watchdog_and_stopping(
    servers: Servers, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    add_call(servers, 1)
    # WATCHDOG_PID is left out: systemd sets it only when the service forks; 1.5 s -> a ping every 0.5 s.
    daemon = start_daemon(servers, NOTIFY_SOCKET=path, WATCHDOG_USEC="1500000")
    try:
        assert receive(sock).startswith("READY=1")
        wait_for(lambda: len(servers.telegram.messages) == 1)
        pings = [receive(sock) for _ in range(3)]
        assert all(p.startswith("WATCHDOG=1") for p in pings), pings
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=20)
        rest = []
        sock.settimeout(0.5)
        while True:
            try:
                rest.append(receive(sock))
            except TimeoutError:
                break
    finally:
        daemon.kill()
    assert daemon.returncode == 0, err
    assert "STOPPING=1" in rest and rest.index("STOPPING=1") == len(rest) - 1, rest
    assert_no_secret(out, err)


@pytest.mark.slow
def test_sigterm_with_every_worker_in_a_slow_transcription_exits_0_within_10_s_and_they_resume(
    servers: Servers,
) -> None:
    for n in range(1, 5):  # one call per worker (4 by default)
        add_call(servers, n)
    servers.openai.transcribe_delay = 60  # far longer than the stop grace
    daemon = start_daemon(servers)
    try:
        wait_for(lambda: len(servers.openai.transcriptions) == 4)  # every worker is inside one
        daemon.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        out, err = daemon.communicate(timeout=20)  # the grace is 9 s
        stopped_after = time.monotonic() - signalled
    finally:
        daemon.kill()
    assert daemon.returncode == 0, err
    assert stopped_after < 10.0, f"exit took {stopped_after:.1f} s"
    assert "abandoned uncommitted" in err and "Traceback" not in err
    assert servers.telegram.messages == []

    servers.openai.transcribe_delay = 0
    again = start_daemon(servers)
    try:
        wait_for(lambda: len(servers.telegram.messages) == 4)
        again.send_signal(signal.SIGTERM)
        out2, err2 = again.communicate(timeout=20)
    finally:
        again.kill()
    assert again.returncode == 0 and "abandoned" not in err2 and "stopped" in err2
    assert len(servers.openai.transcriptions) == 8, "paid once more, for each abandoned transcription"
    assert len(servers.telegram.messages) == 4
    assert_no_secret(out, err, out2, err2)


def test_a_fatal_error_is_logged_at_error_once_then_briefly(caplog: pytest.LogCaptureFixture) -> None:
    from salesbot_poller.cli.daemon import _FatalLog

    caplog.set_level(logging.INFO)
    fatal = _FatalLog()
    text = "Telegram sendMessage: Bad Request: chat not found: check telegram.chat_id and that the bot was added"
    for _ in range(3):
        fatal.report(text, 300)
    fatal.clear()
    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert levels[0] == ("ERROR", f"cycle stopped: {text} (next try in 300 s)")
    assert [level for level, _ in levels] == ["ERROR", "WARNING", "WARNING", "INFO"]
    assert all("chat not found" not in message for _, message in levels[1:]), "the fix is said once"


@pytest.mark.slow
def test_a_second_instance_on_the_same_database_is_refused(servers: Servers) -> None:
    import fcntl

    from tests.conftest import run_cli

    add_call(servers, 1)
    config = servers.write_config()
    state = servers.tmp / "state"  # made by write_config, as install.sh makes it
    with (state / "salesbot.db.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running daemon holds it
        refused = run_cli("once", config=config, child=True)  # another process, as a second instance
    assert refused.returncode == 3
    assert "another salesbot-poller (once or run) is processing calls" in refused.stderr.strip().splitlines()[-1]
    assert servers.openai.transcriptions == [] and servers.telegram.messages == []
    assert run_cli("once", config=config).returncode == 0 and len(servers.telegram.messages) == 1


def test_the_watchdog_is_starved_once_no_lane_reached_the_database_for_long(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    health = CycleHealth()
    health.database_lost(1000.0)
    health.database_lost(1200.0)  # another lane meets it too: the outage began at the first
    assert not health.outage_too_long(1000.0 + OUTAGE_RESTART_SECONDS - 1)
    with caplog.at_level(logging.INFO):
        assert health.outage_too_long(1000.0 + OUTAGE_RESTART_SECONDS)
        assert health.outage_too_long(1000.0 + OUTAGE_RESTART_SECONDS + 60)
        health.database_back()
    assert caplog.text.count("unreachable for") == 1, "told once per outage"
    assert "watchdog pings resume" in caplog.text
    assert not health.outage_too_long(10.0**9)
    store = Store.open(f"sqlite:///{tmp_path}/db.sqlite", 0)
    health.failed(store, 2000, peewee.OperationalError("server closed the connection unexpectedly"))
    assert health.outage_too_long(2000 + OUTAGE_RESTART_SECONDS), "a cycle's database error starts one too"
    health.succeeded(store)
    assert not health.outage_too_long(10.0**9), "a cycle that reached the database ends it"
    store.close()


def test_a_worker_waits_for_the_database_then_gives_back_what_it_held(tmp_path: Path) -> None:
    class Restarting(Store):
        refusals = 3

        def release_owner(self, worker: str) -> int:
            if self.refusals:
                self.refusals -= 1
                raise peewee.OperationalError("connection to server failed: Connection refused")
            return super().release_owner(worker)

    store = Restarting.open(f"sqlite:///{tmp_path}/db.sqlite", 0)
    store.record_window([CallEvent("01E1", "in", "leads", 1, 1, 1)], [], until=1, now=1)
    Call.update(stage=Stage.READY.value, kind="conversation").execute()
    assert store.claim_next("me:1", 10, [Stage.READY], "conversation") is not None
    waits: list[float] = []
    assert regain_database(store, "me:1", lambda s: bool(waits.append(s))) == 1
    assert waits == [1.0, 2.0, 4.0, 8.0], "backoff while the server is away"
    assert Call.get_by_id(1).claimed_by is None, "the call is due again for any worker"
    assert regain_database(store, "me:1", lambda s: True) is None, "a stop ends the wait"
    store.close()


def test_a_long_start_asks_systemd_for_more_time_until_it_ends(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})
    with notifier.extending_start(every=0.05, by=90):
        time.sleep(0.3)  # a migration
    first = receive(sock)
    assert first.splitlines() == ["EXTEND_TIMEOUT_USEC=90000000", "STATUS=migrating the database"]
    sock.settimeout(0.2)
    while True:  # what was sent during the block; nothing after it
        try:
            receive(sock)
        except TimeoutError:
            break
    time.sleep(0.15)
    with pytest.raises(TimeoutError):
        receive(sock)
    with SystemdNotifier.from_environ({}).extending_start(every=0.01):  # not under systemd: nothing
        time.sleep(0.03)
