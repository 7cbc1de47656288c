"""Hostile input around secrets: an upstream error echoing a key, a database URL
with a password, and files others could read.

Each row is tested through the real command line (`run_cli`: a child process against the
loopback servers); the store's and the config's own promises have small unit tests beside.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from salesbot_poller.config import load_config
from salesbot_poller.logs import add_secrets
from salesbot_poller.pipeline.recovery import exclusive
from salesbot_poller.services.amocrm_auth import STATE_KEY, OAuthTokens
from salesbot_poller.store import Store, private_dir
from tests.conftest import AMO_TOKEN, BOT_TOKEN, OPENAI_KEY, SECRETS, Servers, run_cli
from tests.fakes import make_mp3
from tests.hostile import values

DB_URL = values()["database_url_with_password"]
DB_PASSWORD = "db-secret-pass-42"  # the password in DB_URL


def echo(secret: str) -> str:
    """An upstream error message that quotes `secret` back (tests/data/hostile.json)."""
    return str(values()["upstream_echo"]).format(secret=secret)


def add_calls(servers: Servers, count: int) -> None:
    now = int(time.time())
    for n in range(1, count + 1):
        servers.amo.add_call(
            entity_id=7000 + n,
            note_id=n,
            duration=60,
            phone=f"+7999000{n:04d}",
            link=servers.recordings.add(f"/r/{n}.mp3", make_mp3(1.0 + n)),
            created_at=now - 600 + n,
        )


def database_texts(db_file: Path) -> list[str]:
    """Every text value in every table of the SQLite file, read with the sqlite3 module."""
    texts: list[str] = []
    with sqlite3.connect(db_file) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                texts.extend(value for value in row if isinstance(value, str))
    return texts


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- row 1: an upstream error that echoes the key or the bot token -------------------------


def test_upstream_errors_echoing_the_key_and_the_token_are_stored_redacted(servers: Servers) -> None:
    add_calls(servers, 2)
    # One transcription is refused quoting the OpenAI key (the call fails: Call.last_error);
    # the other call's card is refused quoting the bot token (Delivery.error).
    servers.openai.fail_next(
        "/audio/transcriptions", 400, {"error": {"message": echo(OPENAI_KEY), "type": "invalid_request_error"}}
    )
    servers.telegram.fail_next(
        "/sendMessage$", 400, {"ok": False, "error_code": 400, "description": "Bad Request: " + echo(BOT_TOKEN)}
    )
    config = servers.write_config()
    result = run_cli("once", config=config)
    assert result.returncode == 0, result.stderr
    db_file = servers.tmp / "state" / "salesbot.db"
    texts = database_texts(db_file)
    stored = "\n".join(texts)
    assert "invalid key *** (request rejected)" in stored, "the errors were stored, redacted"
    for secret in SECRETS:
        assert secret not in stored, "a secret was stored in the database"
    for path in db_file.parent.glob("salesbot.db*"):
        for secret in SECRETS:
            assert secret.encode() not in path.read_bytes(), f"a secret is in {path.name}"
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr


def test_the_last_cycles_error_and_other_state_are_redacted_even_json_escaped(tmp_path: Path) -> None:
    quoted = 'key-with-"quote"-and-\\backslash'
    add_secrets([quoted])  # the store's default redactor: the process's registry
    store = Store.open(f"sqlite:///{tmp_path}/db.sqlite", 1)
    try:
        store.set_state("last_cycle", json.dumps({"error": f"amoCRM said {quoted}"}, ensure_ascii=False))
        assert json.loads(store.get_state("last_cycle") or "{}") == {"error": "amoCRM said ***"}
        store.set_secret_state("kept", quoted)
        assert store.get_state("kept") == quoted, "set_secret_state stores what it is given"
    finally:
        store.close()


def test_a_rotated_oauth_token_is_redacted_from_stored_errors(servers: Servers) -> None:
    text = servers.config_text().replace(
        f'long_lived_token = "{AMO_TOKEN}"',
        'client_id = "cid"\nclient_secret = "csecret"\nredirect_uri = "https://bot.example/cb"\n'
        'refresh_token = "refresh-1"',
    )
    path = servers.tmp / "oauth.toml"
    path.write_text(text)
    config = load_config(path, {})
    store = Store.open(config.storage.database, 0)
    try:
        rotated = OAuthTokens(config.amocrm, store, requests.Session(), lambda: datetime.now(UTC)).access_token()
        assert rotated and rotated not in config.secrets(), "a token the config never had"
        store.set_state("last_cycle", json.dumps({"error": echo(rotated)}))
        assert rotated not in (store.get_state("last_cycle") or "")
        assert json.loads(store.get_state(STATE_KEY) or "{}")["access_token"] == rotated, "the pair itself is kept"
    finally:
        store.close()


# --- row 2: a database URL with a password ------------------------------------------------


@pytest.mark.parametrize("command", [("check",), ("auth", "--code", "code-123"), ("status",), ("once",)])
def test_a_database_password_is_never_printed(servers: Servers, command: tuple[str, ...]) -> None:
    path = servers.write_config()
    path.write_text(path.read_text().replace(f"sqlite:///{servers.tmp}/state/salesbot.db", DB_URL))
    result = run_cli(*command, config=path)
    # No server takes that login (none listens, or it refuses the password): the command
    # fails on the database, and says so. A real server: tests/test_postgres.py.
    assert result.returncode == 3, result.stderr
    assert "database error" in result.stderr
    assert DB_PASSWORD not in result.stdout + result.stderr


def test_check_prints_the_database_url_without_its_password(
    servers: Servers, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from salesbot_poller.cli import main as cli_main

    path = servers.write_config()
    path.write_text(path.read_text().replace(f"sqlite:///{servers.tmp}/state/salesbot.db", DB_URL))
    sqlite_url = f"sqlite:///{servers.tmp}/pg-stand-in.db"
    real_open = Store.open
    # The store opens a SQLite stand-in, the config keeps the URL (a real server: test_postgres).
    monkeypatch.setattr(Store, "open", lambda url, now: real_open(sqlite_url, now))
    root = logging.getLogger()
    handlers, level, old_umask = root.handlers[:], root.level, os.umask(0o022)
    try:
        code = cli_main.main(["--config", str(path), "check"])
    finally:  # main() sets the umask and the log handler of the process: this one's pytest
        os.umask(old_umask)
        root.handlers[:], root.level = handlers, level
    out = capsys.readouterr()
    assert code == 0, out
    assert "database postgresql://salesbot:***@127.0.0.1:5432/salesbot)" in out.out
    assert DB_PASSWORD not in out.out + out.err


# --- row 3: file modes --------------------------------------------------------------------


def run_under_umask(umask: int, *args: str, config: Path) -> subprocess.CompletedProcess[str]:
    """`run_cli`, but the child starts with `umask` (as a careless shell or unit would give)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESBOT_")}
    env |= {"SALESBOT_CONFIG": str(config), "TZ": "UTC"}
    script = f'umask {umask:03o}; exec "$0" -m salesbot_poller "$@"'
    return subprocess.run(
        ["sh", "-c", script, sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_once_under_umask_000_creates_private_files_and_directories(servers: Servers) -> None:
    add_calls(servers, 1)
    config = servers.write_config()
    config.write_text(config.read_text().replace("[storage]\n", "[storage]\nkeep_audio = true\n"))
    result = run_under_umask(0o000, "once", config=config)
    assert result.returncode == 0, result.stderr
    assert len(servers.telegram.messages) == 1, "the call went through"
    state = servers.tmp / "state"
    db = state / "salesbot.db"
    assert mode(state) == 0o700 and mode(db) == 0o600
    assert mode(state / "salesbot.db.lock") == 0o600
    for companion in ("salesbot.db-wal", "salesbot.db-shm"):
        if (state / companion).exists():  # SQLite removes them when the last connection closes
            assert mode(state / companion) == 0o600
    audio = state / "audio"
    kept = list(audio.iterdir())
    assert mode(audio) == 0o700 and kept, "keep_audio kept the recording"
    files = [p for p in kept if p.is_file()] + [f for d in kept if d.is_dir() for f in d.iterdir()]
    dirs = [p for p in kept if p.is_dir()]  # clip-<id>/: the quote clips' audio (storage.clip_days)
    assert all(mode(path) == 0o600 for path in files), [(p.name, oct(mode(p))) for p in files]
    assert all(mode(path) == 0o700 for path in dirs), [(p.name, oct(mode(p))) for p in dirs]


def test_files_an_older_version_left_readable_are_made_private(tmp_path: Path) -> None:
    db, audio = tmp_path / "salesbot.db", tmp_path / "audio"
    wal = tmp_path / "salesbot.db-wal"
    for path in (db, wal, tmp_path / "salesbot.db.lock"):
        path.write_bytes(b"")
        path.chmod(0o644)
    audio.mkdir(mode=0o755)
    audio.chmod(0o755)
    tmp_path.chmod(0o755)
    Store.open(f"sqlite:///{db}", 1).close()
    with exclusive(f"sqlite:///{db}"):
        pass
    private_dir(audio)
    assert mode(db) == 0o600 and mode(tmp_path / "salesbot.db.lock") == 0o600
    assert not wal.exists() or mode(wal) == 0o600  # SQLite removes an empty WAL at close
    assert mode(audio) == 0o700
    assert mode(tmp_path) == 0o755, "an existing directory that holds the database may be shared: left alone"


def test_check_warns_once_about_a_config_with_inline_secrets_that_others_can_read(servers: Servers) -> None:
    config = servers.write_config()
    config.chmod(0o666)
    result = run_cli("check", config=config)
    assert result.returncode == 0, result.stdout + result.stderr  # a warning, not a failure
    warnings = [line for line in result.stdout.splitlines() if "warning" in line]
    assert warnings == [
        f"config: warning: {config} holds amocrm.long_lived_token, openai.api_key, telegram.bot_token "
        f"and is readable by group and others (mode 0666): chmod 600 {config}"
    ]
    config.chmod(0o600)
    assert "warning" not in run_cli("check", config=config).stdout


def test_check_does_not_warn_when_the_secrets_live_in_files(servers: Servers) -> None:
    text = servers.config_text()
    for key, secret in (("long_lived_token", AMO_TOKEN), ("api_key", OPENAI_KEY), ("bot_token", BOT_TOKEN)):
        secret_file = servers.tmp / key
        secret_file.write_text(secret)
        secret_file.chmod(0o600)
        text = text.replace(f'{key} = "{secret}"', f'{key}_file = "{secret_file}"')
    config = servers.tmp / "config.toml"
    config.write_text(text)
    config.chmod(0o644)
    (servers.tmp / "state").mkdir(mode=0o700)  # as install.sh makes it: `check` creates nothing
    result = run_cli("check", config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning" not in result.stdout
