"""Files the config names are read as regular files only, and never past a cap: /dev/zero or
a FIFO named as a rubric or prompt file cannot hang `check`, and a prompt sent with every
request is at most 64 KB (issue 28, point 8).

What could hang (a FIFO, /dev/zero) runs in a child `salesbot-poller check` with a timeout
and a memory limit: a regression fails the test instead of hanging it or eating the machine."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from salesbot_poller.config import FILE_LIMIT, PROMPT_LIMIT, load_config, parse_config, read_text
from salesbot_poller.errors import ConfigError
from salesbot_poller.services.prompts import load_prompt
from tests.conftest import cli_env

SECRETS = {
    "SALESBOT_AMOCRM_BASE_URL": "https://example.amocrm.ru",
    "SALESBOT_AMOCRM_LONG_LIVED_TOKEN": "amo-token",
    "SALESBOT_OPENAI_API_KEY": "sk-test",
    "SALESBOT_TELEGRAM_BOT_TOKEN": "1:abc",
    "SALESBOT_TELEGRAM_CHAT_ID": "-100",
}
CONFIG = """
[amocrm]
base_url = "https://example.amocrm.ru"
long_lived_token = "amo-token"
[openai]
api_key = "sk-test"
[telegram]
bot_token = "1:abc"
chat_id = "-100"
[storage]
database = "sqlite:///{tmp}/salesbot.db"
"""
CHILD_TIMEOUT = 30.0  # generous on a loaded machine; a hang is what it catches
MEMORY_LIMIT = 2 * 2**30  # reading /dev/zero to the end would pass it within seconds


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def check_in_child(config: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """`salesbot-poller check` in a child process: its result, and how long it took."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "salesbot_poller", "check"],
        capture_output=True,
        text=True,
        env=cli_env(config, None),
        timeout=CHILD_TIMEOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=_limit_memory,
    )
    return result, time.monotonic() - started


def write_config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(tmp=tmp_path) + extra, encoding="utf-8")
    path.chmod(0o600)
    return path


def fifo(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    os.mkfifo(path)
    return path


def problems_of(raw: dict[str, object], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ or {}, require_secrets=False)
    return caught.value.problems


def test_dev_zero_as_a_rubric_file_makes_check_exit_with_the_error_at_once(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[[profiles]]\nname = "Опт"\nrubric_file = "/dev/zero"\n')
    result, seconds = check_in_child(config)
    assert result.returncode == 2, result.stderr
    assert "profiles[1].rubric_file: /dev/zero is not a regular file (a character device)" in result.stderr
    assert seconds < CHILD_TIMEOUT


def test_a_fifo_as_a_prompt_file_is_refused_without_hanging(tmp_path: Path) -> None:
    prompt, vocabulary = fifo(tmp_path, "prompt.fifo"), fifo(tmp_path, "vocabulary.fifo")
    config = write_config(
        tmp_path,
        f'[analysis]\nprompt_file = "{prompt}"\n[[profiles]]\nname = "Опт"\nprompt_file = "{prompt}"\n'
        f'rubric_file = "{prompt}"\n',
    )
    config.write_text(
        config.read_text().replace("[openai]\n", f'[openai]\nvocabulary_prompt_file = "{vocabulary}"\n'),
        encoding="utf-8",
    )
    result, _ = check_in_child(config)  # no writer ever opens the FIFOs: a plain open() would wait forever
    assert result.returncode == 2, result.stderr
    for line in (
        f"analysis.prompt_file: {prompt} is not a regular file (a FIFO)",
        f"profiles[1].prompt_file: {prompt} is not a regular file (a FIFO)",
        f"profiles[1].rubric_file: {prompt} is not a regular file (a FIFO)",
        f"openai.vocabulary_prompt_file: {vocabulary} is not a regular file (a FIFO)",
    ):
        assert line in result.stderr, result.stderr


def test_a_4_4_mb_prompt_is_refused_naming_key_path_size_and_limit(tmp_path: Path) -> None:
    prompt = tmp_path / "p.txt"
    prompt.write_bytes(b"x" * int(4.4 * 2**20))
    assert problems_of({"analysis": {"prompt_file": str(prompt)}}) == [
        f"analysis.prompt_file: {prompt} is 4.4 MB, the limit is 64 KB"
    ]
    assert problems_of({"profiles": [{"name": "Опт", "prompt_file": str(prompt)}]}) == [
        f"profiles[1].prompt_file: {prompt} is 4.4 MB, the limit is 64 KB"
    ]
    with pytest.raises(ConfigError, match=r"is 4\.4 MB, the limit is 64 KB"):
        load_prompt(str(prompt))  # grown since the config was validated: still not sent


def test_a_70_kb_prompt_is_refused_and_a_60_kb_one_is_read(tmp_path: Path) -> None:
    big, fine = tmp_path / "big.txt", tmp_path / "fine.txt"
    big.write_text("я" * (35 * 1024), encoding="utf-8")  # 70 KB of UTF-8
    fine.write_text("y" * (60 * 1024), encoding="utf-8")
    assert problems_of({"analysis": {"prompt_file": str(big)}}) == [
        f"analysis.prompt_file: {big} is 70 KB, the limit is 64 KB"
    ]
    config = parse_config({"analysis": {"prompt_file": str(fine)}}, {}, require_secrets=False)
    assert load_prompt(config.analysis.prompt_file).startswith("y" * (60 * 1024))


def test_a_rubric_file_over_64_kb_is_refused(tmp_path: Path) -> None:
    rubric = tmp_path / "rubric.toml"
    rubric.write_text('[[rubric]]\nid = "price"\ntitle = "Цена"\n' + "#" * PROMPT_LIMIT + "\n", encoding="utf-8")
    assert problems_of({"profiles": [{"name": "Опт", "rubric_file": str(rubric)}]}) == [
        f"profiles[1].rubric_file: {rubric} is over 64 KB, the limit is 64 KB"
    ]


def test_secret_files_credentials_and_the_config_file_are_capped_at_1_mb(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"k" * (FILE_LIMIT + 1))
    assert problems_of({"openai": {"api_key_file": str(big)}}) == [
        f"openai.api_key_file: {big} is over 1 MB, the limit is 1 MB"
    ]
    assert problems_of({}, {"SALESBOT_OPENAI_API_KEY_FILE": str(big)}) == [
        f"openai.api_key: SALESBOT_OPENAI_API_KEY_FILE: {big} is over 1 MB, the limit is 1 MB"
    ]
    credentials = tmp_path / "credentials"
    (credentials / "telegram_bot_token").mkdir(parents=True)
    assert problems_of({}, {"CREDENTIALS_DIRECTORY": str(credentials)}) == [
        f"telegram.bot_token: credential {credentials}/telegram_bot_token is not a regular file (a directory)"
    ]
    config = tmp_path / "config.toml"
    config.write_bytes(b"# padding\n" * (FILE_LIMIT // 5))
    with pytest.raises(ConfigError) as caught:
        load_config(config, SECRETS)
    assert caught.value.problems == [f"{config} is 2 MB, the limit is 1 MB"]
    with pytest.raises(ConfigError, match=r"is not a regular file \(a directory\)"):
        load_config(tmp_path, SECRETS)


def test_a_file_that_is_not_utf8_is_named_not_a_traceback(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"\xff\xfe sk")
    assert problems_of({"openai": {"api_key_file": str(key)}}) == [f"openai.api_key_file: {key} is not UTF-8 text"]


def test_at_most_the_cap_and_one_byte_is_read(tmp_path: Path) -> None:
    """A file that says it is empty but is not (as /proc files do) is still read only to the cap."""
    proc = Path("/proc/self/maps")
    if not proc.exists():
        pytest.skip("no /proc")
    assert proc.stat().st_size == 0
    with pytest.raises(ValueError, match="is over 1 KB, the limit is 1 KB"):
        read_text(proc, 1024)
    text = tmp_path / "crlf.txt"
    text.write_bytes(b"a\r\nb\rc\n")
    assert read_text(text, 1024) == "a\nb\nc\n", "newlines as Path.read_text gives them"
