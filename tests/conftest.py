"""Fixtures: the four loopback servers, a config file that points at them, and the database
(SQLite; PostgreSQL too for the tests marked `postgres`: see tests/databases.py)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from telebot import apihelper

from tests.databases import BACKENDS, fresh_postgres
from tests.fakes import FakeAmoCRM, FakeOpenAI, FakeRecordings, FakeTelegram

AMO_TOKEN = "amo-long-lived-secret-0123456789"
OPENAI_KEY = "sk-test-secret-0123456789abcdef"
BOT_TOKEN = "123456:TEST-secret-bot-token-abcdef"
CHAT_ID = "-1001234567890"
SECRETS = (AMO_TOKEN, OPENAI_KEY, BOT_TOKEN, BOT_TOKEN.split(":")[1])


@dataclass
class Servers:
    amo: FakeAmoCRM
    recordings: FakeRecordings
    openai: FakeOpenAI
    telegram: FakeTelegram
    tmp: Path
    database: str = ""  # storage.database: a fresh PostgreSQL database, or ("") a SQLite file under tmp

    def __post_init__(self) -> None:
        self.database = self.database or f"sqlite:///{self.tmp}/state/salesbot.db"

    def config_text(self, **poller: object) -> str:
        settings = {
            "interval_seconds": 1,
            "initial_lookback_minutes": 60,
            "min_duration_seconds": 10,
            "retry_delay_seconds": 60,
        } | poller
        poller_lines = "\n".join(f"{k} = {v!r}" for k, v in settings.items())
        return f"""
[amocrm]
base_url = "{self.amo.base_url}"
long_lived_token = "{AMO_TOKEN}"
[openai]
api_key = "{OPENAI_KEY}"
base_url = "{self.openai.base_url}/v1"
[telegram]
bot_token = "{BOT_TOKEN}"
chat_id = "{CHAT_ID}"
api_url = "{self.telegram.base_url}"
[poller]
{poller_lines}
[storage]
database = "{self.database}"
audio_dir = "{self.tmp}/state/audio"
allow_private_recording_hosts = true
"""

    def write_config(self, **poller: object) -> Path:
        path = self.tmp / "config.toml"
        path.write_text(self.config_text(**poller))
        path.chmod(0o600)  # as deploy/install.sh leaves it: `check` warns about one others can read
        # The database's directory, as install.sh and the unit's StateDirectory= make it:
        # `check` creates nothing, and fails on a directory that is not there.
        state = self.tmp / "state"
        if self.database.startswith("sqlite:") and not state.exists():
            state.mkdir(mode=0o700)
        return path


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked `postgres` runs once per backend (its `backend` fixture: see below),
    unless it names its backend itself (`parametrize("backend", ["postgresql"])`)."""
    chosen = any(mark.args[:1] == ("backend",) for mark in metafunc.definition.iter_markers("parametrize"))
    if metafunc.definition.get_closest_marker("postgres") and "backend" in metafunc.fixturenames and not chosen:
        metafunc.parametrize("backend", BACKENDS)


@pytest.fixture
def backend() -> str:
    """The database a test runs against: SQLite, unless marked `postgres` (then both)."""
    return "sqlite"


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """`storage.database` for the test: a SQLite file (not created yet) under tmp_path, or a
    fresh PostgreSQL database dropped after the test."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/state/salesbot.db"
        return
    with fresh_postgres() as url:
        yield url


@pytest.fixture
def servers(tmp_path: Path, database_url: str) -> Iterator[Servers]:
    saved = (apihelper.API_URL, apihelper.FILE_URL, apihelper.CUSTOM_REQUEST_SENDER)
    amo = FakeAmoCRM(token=AMO_TOKEN).start()
    recordings = FakeRecordings().start()
    openai_server = FakeOpenAI(api_key=OPENAI_KEY).start()
    telegram = FakeTelegram(token=BOT_TOKEN).start()
    telegram.known_chats = {CHAT_ID}
    try:
        yield Servers(amo, recordings, openai_server, telegram, tmp_path, database_url)
    finally:
        for server in (amo, recordings, openai_server, telegram):
            server.stop()
        # telebot's server URL and transport are process-global: leave them as found.
        apihelper.API_URL, apihelper.FILE_URL, apihelper.CUSTOM_REQUEST_SENDER = saved


def cli_env(config: Path | None, extra_env: dict[str, str] | None) -> dict[str, str]:
    """The command's environment: this one without any SALESBOT_* variable (no secret), plus
    `extra_env`, SALESBOT_CONFIG (when `config` is given) and TZ=UTC."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESBOT_")} | (extra_env or {})
    if config is not None:
        env["SALESBOT_CONFIG"] = str(config)
    env["TZ"] = "UTC"
    return env


def run_cli(
    *args: str,
    config: Path | None = None,
    timeout: float = 60,
    extra_env: dict[str, str] | None = None,
    child: bool = False,
) -> subprocess.CompletedProcess[str]:
    """The real command line with no secret in its environment (but `extra_env`, when a test
    gives one): in this process (`run_cli_inprocess`), or with `child=True` in a child process
    (`python -m salesbot_poller`), for what needs one: signals, the umask or the file
    descriptors it inherits, locks held by another process, a process's own environment."""
    if not child:
        return run_cli_inprocess(*args, config=config, extra_env=extra_env)
    return subprocess.run(
        [sys.executable, "-m", "salesbot_poller", *args],
        capture_output=True,
        text=True,
        env=cli_env(config, extra_env),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _text(stream: io.TextIOWrapper) -> str:
    """What a child's captured stream reads as (`text=True`: UTF-8, universal newlines)."""
    stream.flush()
    raw = stream.buffer
    assert isinstance(raw, io.BytesIO)
    return raw.getvalue().decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def run_cli_inprocess(
    *args: str, config: Path | None = None, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`salesbot_poller.cli.main.main(args)` in this process, as `run_cli(child=True)` runs it:
    the same environment, TZ=UTC, stdin not a terminal (and empty), stdout and stderr
    captured. What `main` changes for the whole process is put back afterwards: the
    environment and time zone, the umask, logging (handlers and levels), the secrets
    registered for redaction (a child starts with none), telebot's server URL and transport.
    An exception that escapes `main` is a traceback on stderr and exit code 1, as in a child."""
    from salesbot_poller import logs
    from salesbot_poller.cli.main import main

    saved_env = dict(os.environ)
    saved_streams = (sys.stdin, sys.stdout, sys.stderr)
    root = logging.getLogger()
    saved_handlers = list(root.handlers)
    loggers = [
        root,
        *(logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)),
    ]
    saved_levels = [(logger, logger.level) for logger in loggers]
    saved_secrets = logs._registry._values
    saved_telebot = (apihelper.API_URL, apihelper.FILE_URL, apihelper.CUSTOM_REQUEST_SENDER)
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="")
    stderr = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="")
    saved_umask = os.umask(0o022)
    os.umask(saved_umask)
    try:
        os.environ.clear()
        os.environ.update(cli_env(config, extra_env))
        time.tzset()
        logs._registry._values = frozenset()
        sys.stdin, sys.stdout, sys.stderr = io.StringIO(""), stdout, stderr
        try:
            code: object = main(list(args))
        except SystemExit as exc:  # argparse: --help, --version, invalid arguments
            code = exc.code
        except Exception:
            traceback.print_exc()
            code = 1
        with contextlib.suppress(Exception):
            for handler in root.handlers:
                handler.flush()
        returncode = code if isinstance(code, int) else (0 if code is None else 1)
        if not isinstance(code, int | None):
            print(code, file=sys.stderr)
        return subprocess.CompletedProcess(["salesbot-poller", *args], returncode, _text(stdout), _text(stderr))
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        os.environ.clear()
        os.environ.update(saved_env)
        time.tzset()
        os.umask(saved_umask)
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()
        root.handlers[:] = saved_handlers
        for logger, level in saved_levels:
            logger.setLevel(level)
        logs._registry._values = saved_secrets
        apihelper.API_URL, apihelper.FILE_URL, apihelper.CUSTOM_REQUEST_SENDER = saved_telebot


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, "a secret leaked into output"
