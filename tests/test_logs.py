"""Log lines for journald: syslog priority prefixes when JOURNAL_STREAM names stderr, the cycle
summary line, `--log-level` over `poller.log_level`, and redaction kept."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from salesbot_poller.logs import RedactingFormatter, syslog_priority
from tests.conftest import OPENAI_KEY, Servers, assert_no_secret
from tests.fakes import make_mp3


def record(level: int, message: str, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom " + OPENAI_KEY)
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord("salesbot_poller.x", level, __file__, 1, message, None, exc_info)


def test_priorities_follow_syslog() -> None:
    assert [syslog_priority(lv) for lv in (50, 40, 30, 20, 10, 5)] == [2, 3, 4, 6, 7, 7]
    assert syslog_priority(25) == 6  # a custom level between INFO and WARNING counts as INFO


def test_every_line_of_a_record_carries_the_prefix_and_secrets_stay_hidden() -> None:
    formatter = RedactingFormatter("%(levelname)s %(name)s: %(message)s", journal=True)
    formatter.secrets.add(OPENAI_KEY)
    text = formatter.format(record(logging.ERROR, f"failed with {OPENAI_KEY}", exc=True))
    lines = text.split("\n")
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines)
    assert lines[0] == "<3>ERROR salesbot_poller.x: failed with ***"
    assert_no_secret(text)
    plain = RedactingFormatter("%(levelname)s %(message)s").format(record(logging.WARNING, "w"))
    assert plain == "WARNING w"


def run_with_journal(args: list[str], config: Path, tmp: Path, journal: bool = True) -> tuple[int, str]:
    """The real CLI with stderr in a file that JOURNAL_STREAM names, as systemd does it."""
    err_path = tmp / "stderr.log"
    with err_path.open("w") as err:
        st = os.fstat(err.fileno())
        env = {k: v for k, v in os.environ.items() if not k.startswith("SALESBOT_")}
        env |= {"SALESBOT_CONFIG": str(config), "TZ": "UTC"}
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}" if journal else f"{st.st_dev}:{st.st_ino + 1}"
        done = subprocess.run(
            [sys.executable, "-m", "salesbot_poller", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            timeout=60,
        )
    return done.returncode, err_path.read_text()


def seed(servers: Servers) -> None:
    now = int(time.time())
    servers.amo.add_user(555, "Иван Петров")
    servers.amo.add_entity("lead", 7001, "ООО Ромашка", 555)
    servers.amo.add_call(
        entity_id=7001, note_id=101, duration=125, phone="+79991110001", created_at=now - 600,
        link=servers.recordings.add("/rec-101.mp3", make_mp3(2.0)), responsible_user_id=555,
    )  # fmt: skip
    servers.amo.add_call(
        entity_id=7001, note_id=102, duration=60, phone="+79991110002", created_at=now - 500,
        link=servers.recordings.base_url + "/not-yet.mp3", responsible_user_id=555,
    )  # fmt: skip


@pytest.mark.slow
def test_under_journald_each_line_has_its_priority(servers: Servers) -> None:
    seed(servers)
    code, err = run_with_journal(["once"], servers.write_config(), servers.tmp)
    assert code == 0, err
    lines = err.splitlines()
    assert lines and all(re.match(r"<[2-7]>", line) for line in lines), err
    summary = [line for line in lines if "cycle: events=" in line]
    assert len(summary) == 1 and summary[0].startswith("<6>INFO salesbot_poller.lanes: cycle: events=2 new=2")
    assert re.search(r"transcribed=1 .*notified=1 .*failed=0 in [\d.]+ s$", summary[0])
    deferred = [line for line in lines if "recording not available" in line]
    assert deferred and deferred[0].startswith("<4>WARNING")
    assert_no_secret(err)


@pytest.mark.slow
def test_without_a_matching_journal_stream_lines_carry_the_time(servers: Servers) -> None:
    code, err = run_with_journal(["once"], servers.write_config(), servers.tmp, journal=False)
    assert code == 0, err
    assert not re.search(r"^<\d>", err, re.M)
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO salesbot_poller.lanes: cycle:", err, re.M)


@pytest.mark.slow
def test_log_level_key_and_the_flag_that_overrides_it(servers: Servers) -> None:
    config = servers.write_config(log_level="WARNING")
    code, err = run_with_journal(["once"], config, servers.tmp)
    assert code == 0 and "cycle: events=" not in err
    code, err = run_with_journal(["--log-level", "INFO", "once"], config, servers.tmp)
    assert code == 0 and "<6>INFO salesbot_poller.lanes: cycle: events=" in err


@pytest.mark.slow
def test_command_errors_are_errors_in_the_journal(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[amocrm]\nbase_url = "https://example.amocrm.ru"\n[poller]\ninterval_seconds = 0\n')
    code, err = run_with_journal(["once"], config, tmp_path)
    assert code == 2
    lines = err.splitlines()
    assert lines and all(line.startswith("<3>salesbot-poller: config: ") for line in lines), err
    assert (
        f"<3>salesbot-poller: config: poller.interval_seconds: Input should be greater than 0 (from {config} line 4)"
        in lines
    )
