"""Every command shows times in `amocrm.timezone` with the zone named (`domain.time_text`):
`status` through the real command line, on a machine whose own zone (TZ=UTC) is another."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from salesbot_poller.lanes import LAST_CYCLE_KEY
from salesbot_poller.store import Store
from salesbot_poller.store.base import CURSOR_KEY
from tests.builder import offline_config
from tests.conftest import run_cli

CYCLE_AT = int(datetime(2026, 12, 5, 14, 3, tzinfo=UTC).timestamp())  # 00:03 the next day in Vladivostok


def write_config(home: Path, zone: str) -> Path:
    raw = offline_config(home)
    raw["amocrm"]["timezone"] = zone
    lines = []
    for section, values in raw.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    path = home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    assert tomllib.loads(path.read_text())["amocrm"]["timezone"] == zone
    return path


def test_status_shows_the_last_cycle_and_cursor_in_the_account_zone_named(tmp_path: Path) -> None:
    config = write_config(tmp_path, "Asia/Vladivostok")
    store = Store.open(f"sqlite:///{tmp_path}/db.sqlite", CYCLE_AT)
    store.set_state(LAST_CYCLE_KEY, json.dumps({"at": CYCLE_AT, "seconds": 1.5}))
    store.set_state(CURSOR_KEY, str(CYCLE_AT - 60))
    store.close()
    result = run_cli("status", config=config)
    assert result.returncode == 0, result.stderr
    assert "last cycle: 2026-12-06 00:03 Asia/Vladivostok, 1.5 s, ok" in result.stdout
    assert "cursor: 2026-12-06 00:02 Asia/Vladivostok" in result.stdout
    assert " UTC" not in result.stdout.replace("openai usage (UTC", "")


def test_a_zone_without_a_name_is_shown_by_its_abbreviation_or_offset() -> None:
    from salesbot_poller.domain import time_text

    assert time_text(CYCLE_AT, UTC) == "2026-12-05 14:03 UTC"
    assert time_text(CYCLE_AT, timezone(timedelta(hours=10))) == "2026-12-06 00:03 UTC+10:00"


def test_poller_timezone_is_the_same_setting_by_its_other_name(tmp_path: Path) -> None:
    """`poller.timezone` (the name users also look for) sets the zone when amocrm's is unset;
    both set and different is one line naming both."""
    config = write_config(tmp_path, "")
    config.write_text(config.read_text() + '[poller]\ntimezone = "Asia/Vladivostok"\n')
    store = Store.open(f"sqlite:///{tmp_path}/db.sqlite", CYCLE_AT)
    store.set_state(LAST_CYCLE_KEY, json.dumps({"at": CYCLE_AT, "seconds": 1.5}))
    store.close()
    result = run_cli("status", config=config)
    assert result.returncode == 0, result.stderr
    assert "last cycle: 2026-12-06 00:03 Asia/Vladivostok, 1.5 s, ok" in result.stdout

    config.write_text(config.read_text().replace('timezone = ""', 'timezone = "Europe/Moscow"', 1))
    result = run_cli("check", config=config)
    assert result.returncode != 0
    assert (
        "poller.timezone (Asia/Vladivostok) and amocrm.timezone (Europe/Moscow) differ" in result.stdout + result.stderr
    )

    text = config.read_text().replace('timezone = "Europe/Moscow"', 'timezone = ""', 1)
    config.write_text(text.replace('"Asia/Vladivostok"', '"Mars/Olympus"'))
    result = run_cli("check", config=config)
    assert "poller.timezone: unknown time zone 'Mars/Olympus'" in result.stdout + result.stderr
