"""The daemon's journal in its first hours: an idle intake pass logs at DEBUG, a pass that did
something at INFO, and one INFO heartbeat an hour names the calls and the last event in
`amocrm.timezone`. Time is passed in: each pass is given its own `now`."""

from __future__ import annotations

import logging
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from salesbot_poller.lanes import intake
from tests.builder import T0, build_rig
from tests.loopback_app import add_call

MOSCOW = ZoneInfo("Europe/Moscow")


def info_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and r.name.startswith("salesbot")]


def test_idle_passes_are_quiet_and_an_hourly_heartbeat_says_the_daemon_is_alive(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = build_rig(tmp_path, tz=MOSCOW, amocrm={"timezone": "Europe/Moscow"})
    start = int(T0.timestamp())
    caplog.set_level(logging.DEBUG, logger="salesbot_poller")
    for minute in range(0, 59, 3):  # an hour of idle passes
        intake(rig.app, start + 60 * minute)
    assert info_lines(caplog) == [], "an idle pass logs nothing at INFO"
    assert any(r.getMessage().startswith("cycle:") and r.levelno == logging.DEBUG for r in caplog.records)

    caplog.clear()
    intake(rig.app, start + 3600)
    assert info_lines(caplog) == ["idle: 0 calls in 60 min, last event none since the start"]

    caplog.clear()
    add_call(rig, 1, minutes=62, duration=0, status=6)  # a missed call at 10:02 UTC = 13:02 Moscow
    intake(rig.app, start + 63 * 60)  # 10:03 UTC = 13:03 Moscow
    lines = info_lines(caplog)
    assert any(line.startswith("cycle: events=1 new=1") for line in lines), lines
    assert any("alert sent" in line for line in lines), "each message sent is an INFO line"

    caplog.clear()
    for minute in range(6, 61, 3):
        intake(rig.app, start + 3600 + 60 * minute)
    lines = info_lines(caplog)
    assert not [line for line in lines if line.startswith("cycle:")], lines
    assert lines[-1] == "running: 1 calls in 60 min, last event 13:03 Europe/Moscow"
