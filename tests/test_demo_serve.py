"""`salesbot-poller demo --serve`: the sandboxes and the daemon until Ctrl-C, bot commands typed
on its stdin, every command runnable against the config it writes. The end-to-end tests run
it as a user does (a child process, stdin piped); the others drive the sandboxes through the
real clients."""

from __future__ import annotations

import fcntl
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from telebot import apihelper

from salesbot_poller import logs
from salesbot_poller.app import build_app
from salesbot_poller.cli.demo_cycle import AMO_TOKEN, BOT_TOKEN, CHAT_ID, OPENAI_KEY
from salesbot_poller.cli.demo_parts import (
    ADMIN_ID,
    CHAT_TITLES,
    COMMAND_CHAT,
    MARKER,
    demo_toml,
    message_lines,
    read_lines,
)
from salesbot_poller.config import load_config
from salesbot_poller.domain import Destination
from salesbot_poller.pipeline.context import App
from salesbot_poller.sandbox import SandboxAmoCRM, SandboxOpenAI, SandboxTelegram
from tests.conftest import run_cli_inprocess

NOW = int(datetime(2026, 12, 1, 10, 0, tzinfo=UTC).timestamp())


@pytest.fixture
def sandbox_app(tmp_path: Path) -> Iterator[tuple[App, SandboxAmoCRM, SandboxTelegram]]:
    """The app built from the config `demo --serve` writes, on running sandboxes."""
    saved = (apihelper.API_URL, apihelper.FILE_URL, apihelper.CUSTOM_REQUEST_SENDER)
    saved_secrets = logs._registry._values  # build_app registers the config's secrets process-wide
    with (
        SandboxAmoCRM(AMO_TOKEN, NOW) as amo,
        SandboxOpenAI(OPENAI_KEY) as ai,
        SandboxTelegram(BOT_TOKEN, CHAT_ID, CHAT_TITLES) as tg,
    ):
        (tmp_path / "config.toml").write_text(demo_toml(tmp_path, amo, ai, tg))
        config = load_config(tmp_path / "config.toml", {})
        app = build_app(config, lambda: datetime.fromtimestamp(NOW, UTC))
        try:
            yield app, amo, tg
        finally:
            app.store.close()
            apihelper.API_URL, apihelper.FILE_URL, apihelper.CUSTOM_REQUEST_SENDER = saved
            logs._registry._values = saved_secrets


def test_the_written_config_has_the_one_shot_demos_trackers(
    sandbox_app: tuple[App, SandboxAmoCRM, SandboxTelegram],
) -> None:
    """`demo --serve` shows what `demo` shows: a competitor's alert and the card's tracker lines."""
    from salesbot_poller.cli.demo_cycle import DEMO_TRACKERS

    app, _, _ = sandbox_app
    assert [t.model_dump(exclude_defaults=True) for t in app.config.trackers] == DEMO_TRACKERS


def test_the_written_config_opens_the_bot_to_the_admin_in_the_command_chat(
    sandbox_app: tuple[App, SandboxAmoCRM, SandboxTelegram],
) -> None:
    app, _, _ = sandbox_app
    assert app.config.telegram.admins == [ADMIN_ID] and app.config.telegram.command_chats == [COMMAND_CHAT]
    assert app.config.poller.interval_seconds <= 5 and app.updates is not None
    assert app.config.storage.database.startswith("sqlite:///")


def test_the_telegram_sandbox_serves_typed_messages_as_updates_until_confirmed(
    sandbox_app: tuple[App, SandboxAmoCRM, SandboxTelegram],
) -> None:
    app, _, tg = sandbox_app
    assert app.updates is not None
    first = tg.say("/stats", ADMIN_ID, COMMAND_CHAT)
    tg.say("/find цен", ADMIN_ID, COMMAND_CHAT)
    got = app.updates.fetch(None, 1)
    assert [(u.text, u.user_id, u.chat_id) for u in got] == [
        ("/stats", ADMIN_ID, COMMAND_CHAT),
        ("/find цен", ADMIN_ID, COMMAND_CHAT),
    ]
    assert [u.update_id for u in app.updates.fetch(first + 1, 1)] == [first + 1]  # the first is confirmed
    tg.release()  # an empty queue answers at once after release (a stopping daemon is not held)
    started = time.monotonic()
    assert app.updates.fetch(first + 2, 5) == [] and time.monotonic() - started < 2


def test_the_telegram_sandbox_records_messages_photos_and_documents_in_order(
    sandbox_app: tuple[App, SandboxAmoCRM, SandboxTelegram],
) -> None:
    app, _, tg = sandbox_app
    app.notifier.send("<b>Итог</b>: ООО &lt;Р&gt; &amp; Ко")
    app.notifier.send_photo(b"\x89PNG fake", "📈 <b>Неделя</b>", Destination(COMMAND_CHAT))
    app.notifier.send_document("call-1.txt", "Менеджер: ...".encode(), "📝 <i>Расшифровка</i>", reply_to=1)
    shown = [(e["chat_id"], message_lines(e)) for e in tg.wait_sent(0, 1)]
    assert shown == [
        (CHAT_ID, ["Итог: ООО <Р> & Ко"]),
        (COMMAND_CHAT, ["[photo: 📈 Неделя]"]),
        (CHAT_ID, ["[document call-1.txt: 📝 Расшифровка]"]),
    ]
    assert len(tg.messages) == 1  # sendMessage's parameters, as `demo` reads them


def test_the_amocrm_sandbox_grows_calls_with_fresh_ids_some_missed(
    sandbox_app: tuple[App, SandboxAmoCRM, SandboxTelegram],
) -> None:
    app, amo, _ = sandbox_app
    added = [amo.add_call(NOW + n) for n in range(1, 7)]
    batch = app.source.call_events(NOW - 3600, NOW + 60)
    assert not batch.malformed and len(batch.events) == 2 + 6
    assert len({e.event_id for e in batch.events}) == 8 and len({e.note_id for e in batch.events}) == 8
    live = batch.events[2:]
    notes = {**app.source.call_notes("leads", [e.note_id for e in live if e.entity_type == "leads"])}
    notes |= app.source.call_notes("contacts", [e.note_id for e in live if e.entity_type == "contacts"])
    durations = [notes[e.note_id].duration for e in live]  # type: ignore[union-attr]
    assert durations == [int(str(p["duration"])) for p in added] and durations.count(0) >= 2
    # The outgoing call returns the missed call before it: the same number.
    assert [e.direction for e in live][:3] == ["in", "in", "out"] and added[2]["phone"] == added[1]["phone"]
    answered = [notes[e.note_id] for e in live if notes[e.note_id].duration]  # type: ignore[union-attr]
    assert all(n.link and n.link.startswith(amo.base_url) for n in answered)  # type: ignore[union-attr]


def test_the_amocrm_sandbox_answers_what_profiles_asks(
    sandbox_app: tuple[App, SandboxAmoCRM, SandboxTelegram],
) -> None:
    app, _, _ = sandbox_app
    directory = app.source.directory()  # type: ignore[attr-defined]
    assert [p.name for p in directory.pipelines] == ["Продажи"] and directory.groups == {0: "Отдел продаж"}
    assert {u[1] for u in directory.users} == {"Иван Петров", "Мария Соколова"}


def test_check_and_profiles_pass_against_the_sandboxes_with_the_written_config(
    sandbox_app: tuple[App, SandboxAmoCRM, SandboxTelegram], tmp_path: Path
) -> None:
    check = run_cli_inprocess("check", config=tmp_path / "config.toml")
    assert check.returncode == 0 and "structured output ok" in check.stdout, check.stdout + check.stderr
    profiles = run_cli_inprocess("profiles", config=tmp_path / "config.toml")
    assert profiles.returncode == 0 and "3001  «Продажи»" in profiles.stdout


def test_typed_input_is_read_line_by_line_across_chunks_until_its_end() -> None:
    read, write = os.pipe()
    os.write(write, "/find це".encode() + "н".encode()[:1])
    os.write(write, "н".encode()[1:] + b"\n/stats\n/help")  # a letter split between two reads
    os.close(write)
    got: list[str | None] = []
    read_lines(read, got.append)
    os.close(read)
    assert got == ["/find цен", "/stats", "/help", None]


def test_demo_serve_refuses_a_directory_that_is_not_its_own(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    done = run_cli_inprocess("demo", "--serve", "--dir", str(tmp_path))
    assert done.returncode == 2 and "is not empty and holds no earlier demo" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing written, nothing started


# --- end to end: a child process, as a user runs it -----------------------------------------


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESBOT_", "CREDENTIALS_"))}
    dead = "http://127.0.0.1:9"  # any request not to 127.0.0.1 fails: no network used
    env |= {"HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead, "https_proxy": dead}
    env |= {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1", "TZ": "UTC", "PYTHONUNBUFFERED": "1"}
    return env | {"PYTHONFAULTHANDLER": "1"}  # a hung child's threads are dumped on SIGABRT


class Demo:
    """`demo --serve` in a child process: its stdout lines in a queue, stdin piped."""

    def __init__(self, directory: Path, tmp: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "salesbot_poller", "demo", "--serve", "--dir", str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(tmp),
            cwd=tmp,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.seen))

    def type(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        """After a failure: asked to stop first, so its daemon is not left running."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _ports(config: Path) -> list[int]:
    raw = tomllib.loads(config.read_text())
    urls = [raw["amocrm"]["base_url"], raw["openai"]["base_url"], raw["telegram"]["api_url"]]
    return [int(re.search(r":(\d+)", url.removeprefix("http://"))[1]) for url in urls]  # type: ignore[index]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_demo_serve_runs_the_daemon_answers_typed_commands_and_stops_on_sigint(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    demo = Demo(directory, tmp_path)
    try:
        line = demo.wait_for(r"^config written: ")
        config = directory / "config.toml"
        assert str(config) in line and config.read_text().startswith(MARKER)
        assert (config.stat().st_mode & 0o777) == 0o600  # it holds the (sandbox) secrets
        # Another terminal: `status` with the written config sees the calls of the first cycle.
        status = subprocess.run(
            [sys.executable, "-m", "salesbot_poller", "--config", str(config), "status"],
            capture_output=True, text=True, env=_env(tmp_path), timeout=60,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert re.search(r"^calls: [1-9]", status.stdout, re.M) and "missed_alerted" in status.stdout
        # A command typed here is the admin's message to the bot; its answer is printed as text.
        demo.type("/stats")
        demo.wait_for(r"^→ Руководитель \(личный чат\): 📊 Статистика за 7 дней")
        demo.wait_for(r"^→ Отдел продаж \(демо\): 📥 Входящий звонок · 2:05")  # a card
        demo.type("/call 1")
        demo.wait_for(r"^→ Руководитель \(личный чат\): \[document call-1-transcript\.txt: 📝 Расшифровка")
        assert not any("<b>" in seen or "&lt;" in seen for seen in demo.seen)
        ports = _ports(config)
        assert all(_listening(port) for port in ports)
        demo.process.send_signal(signal.SIGINT)
        try:
            demo.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            demo.process.send_signal(signal.SIGABRT)
            time.sleep(1)
            while not demo.lines.empty():
                print(demo.lines.get())
            raise
        assert demo.process.wait(timeout=15) == 0
        demo.wait_for(r"^demo stopped \(SIGINT\)", timeout=5)
        assert not any(_listening(port) for port in ports)
        # The daemon is gone too: its lock on the database is free.
        with (directory / "salesbot.db.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert "stopped" in (directory / "daemon.log").read_text().splitlines()[-1]
    finally:
        demo.kill()


@pytest.mark.slow
def test_demo_serve_pauses_the_daemon_for_once_stops_at_the_end_of_input_and_reuses_its_directory(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "demo"
    config = directory / "config.toml"
    for run in range(2):
        demo = Demo(directory, tmp_path)
        try:
            demo.wait_for(r"^config written: ")
            if run == 0:
                demo.wait_for(r"^→ Отдел продаж \(демо\): 🔴 Пропущенный звонок")  # the daemon works
                demo.type("pause")  # the daemon lets go of the database: `once` may run elsewhere
                demo.wait_for(r"^the daemon stopped: `once`")
                once = subprocess.run(
                    [sys.executable, "-m", "salesbot_poller", "--config", str(config), "once"],
                    capture_output=True, text=True, env=_env(tmp_path), timeout=60,
                )  # fmt: skip
                assert once.returncode == 0, once.stderr
                demo.type("resume")
                demo.wait_for(r"^the daemon is starting again")
            assert demo.process.stdin is not None
            demo.process.stdin.close()  # Ctrl-D
            assert demo.process.wait(timeout=15) == 0, f"run {run}"
            demo.wait_for(r"^demo stopped \(end of input\)", timeout=5)
            assert not any("stopped by itself" in line for line in demo.seen)
        finally:
            demo.kill()
    assert "stopped" in (directory / "daemon.log").read_text().splitlines()[-1]


def _lock_free(lock_file: Path) -> bool:
    with lock_file.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_killed_demo_leaves_no_daemon_behind(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    demo = Demo(directory, tmp_path)
    try:
        demo.wait_for(r"^config written: ")
        assert not _lock_free(directory / "salesbot.db.lock")  # the daemon holds the database
        demo.process.kill()  # no chance to stop it: the kernel tells the daemon
        demo.process.wait()
        deadline = time.monotonic() + 20
        while not _lock_free(directory / "salesbot.db.lock"):
            assert time.monotonic() < deadline, "the daemon outlived the demo"
            time.sleep(0.2)
        assert "received SIGTERM" in (directory / "daemon.log").read_text()
    finally:
        demo.kill()


@pytest.mark.slow
def test_a_daemon_that_cannot_start_is_reported_and_the_demo_exits_1(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    directory.mkdir()
    (directory / "config.toml").write_text(MARKER + " (an earlier run)\n")
    with (directory / "salesbot.db.lock").open("a") as lock:  # another demo's daemon on this directory
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        demo = Demo(directory, tmp_path)
        try:
            demo.wait_for(r"^demo: the daemon did not start: see .*daemon\.log")
            assert demo.process.wait(timeout=15) == 1
        finally:
            demo.kill()
    assert "another salesbot-poller (once or run) is processing calls" in (directory / "daemon.log").read_text()
    assert not any(line.startswith("config written") for line in demo.seen)
