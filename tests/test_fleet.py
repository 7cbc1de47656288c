"""`fleet status`, `fleet usage` and `usage --month`, through the real command line: a root
with two instances (acme, globex), each a config.toml and a database seeded with calls,
usage and state. The commands read every database and write none: no migration, no file
created, no -wal/-shm of theirs left behind (see `cli.fleet_sqlite`; an instance's user's
traps: tests/test_fleet_hostile.py)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from salesbot_poller.lanes import LAST_CYCLE_KEY
from salesbot_poller.pipeline.health import FAILING_KEY
from salesbot_poller.pipeline.usage import day_start, month_start
from salesbot_poller.services.throttle import PAUSE_STATE_KEY
from salesbot_poller.store import Call, Migration, Store
from tests.conftest import AMO_TOKEN, BOT_TOKEN, OPENAI_KEY, assert_no_secret, run_cli

NOW = int(time.time())
TODAY = day_start(NOW)
GLOBEX_SECRETS = ("globex-amo-secret-0123456789", "sk-globex-secret-abcdef012345", "654321:GLOBEX-bot-secret-xyz")
DB_PASSWORD = "pg-Passw0rd-never-shown"
OTHER_SECRETS = ("other-amo-secret-0123", "sk-other-secret-0123", "777:OTHER-bot-secret")
FEB_2024 = 1706745600  # 2024-02-01 00:00:00 UTC
MAR_2024 = 1709251200  # 2024-03-01 00:00:00 UTC


@pytest.fixture(autouse=True)
def _not_at_midnight() -> None:
    # NOW is taken when each test starts (a long suite runs this file minutes after it is
    # imported); "today" is the UTC day of NOW here and of the child process's clock there.
    global NOW, TODAY
    NOW = int(time.time())
    TODAY = day_start(NOW)
    if TODAY + 86400 - NOW < 120:
        pytest.skip("too close to UTC midnight: the child process may see another day")


def config_text(host: str, database: Path, secrets: tuple[str, str, str], **openai: object) -> str:
    prices = "\n".join(f"{key} = {value!r}" for key, value in openai.items())
    return f"""
[amocrm]
base_url = "https://{host}"
long_lived_token = "{secrets[0]}"
[openai]
api_key = "{secrets[1]}"
{prices}
[telegram]
bot_token = "{secrets[2]}"
chat_id = "-100200300"
[storage]
database = "sqlite:///{database}"
audio_dir = "{database.parent}/audio"
"""


def add_call(n: int, stage: str, *, kind: str | None = None, at: int | None = None) -> None:
    at = NOW if at is None else at
    Call.create(
        event_id=f"EV{n:04d}",
        direction="in",
        entity_type="leads",
        entity_id=1000 + n,
        note_id=n,
        event_created_at=at,
        first_seen_at=at,
        updated_at=at,
        stage=stage,
        kind=kind,
    )


def usage_row(store: Store, call_id: int, at: int, seconds: float = 0, tokens: tuple[int, int] = (0, 0)) -> None:
    kind = "analysis" if any(tokens) else "transcription"
    store.add_usage(
        call_id=call_id,
        at=at,
        kind=kind,
        model="gpt-4o-mini" if any(tokens) else "whisper-1",  # priced by default (`pipeline.prices`)
        audio_seconds=seconds,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
    )


@dataclass
class Fleet:
    root: Path
    data: Path

    def db(self, name: str) -> Path:
        return self.data / f"{name}.db"


def seed_acme(store: Store) -> None:
    add_call(1, "new")
    add_call(2, "downloaded", kind="conversation")
    add_call(3, "missed", kind="missed")
    add_call(4, "failed", kind="conversation")
    add_call(5, "quarantined")
    add_call(6, "notified", kind="conversation")
    add_call(7, "missed_alerted", kind="missed")
    add_call(8, "missed_alerted", kind="missed", at=TODAY + 1)
    add_call(9, "missed_alerted", kind="missed", at=TODAY - 60)  # yesterday's: not counted today
    usage_row(store, 6, TODAY + 1, seconds=600)  # 10 min x $0.01 = $0.10
    usage_row(store, 6, TODAY + 2, tokens=(1000, 500))  # $0.001 + $0.001
    usage_row(store, 2, month_start(NOW), seconds=1200)  # $0.20, this month (today on the 1st)
    # February 2024 (a leap year), for `usage --month 2024-02`:
    usage_row(store, 4, FEB_2024 - 1, seconds=6000)  # 31 January: not February
    usage_row(store, 1, FEB_2024, tokens=(1000, 200))
    usage_row(store, 2, FEB_2024 + 9 * 86400, tokens=(500, 100))
    usage_row(store, 2, FEB_2024 + 9 * 86400 + 5, tokens=(0, 1))  # the same call again: counted once
    usage_row(store, 3, MAR_2024 - 1, seconds=120)  # 29 February, 23:59:59
    usage_row(store, 4, MAR_2024, seconds=6000)  # 1 March: not February
    store.set_state(LAST_CYCLE_KEY, json.dumps({"at": NOW - 30, "seconds": 1.5, "error": None}))
    store.set_state(PAUSE_STATE_KEY, json.dumps({"until": NOW + 7200, "reason": "HTTP 403: IP blocked"}))


def seed_globex(store: Store, failing: bool) -> None:
    add_call(1, "notified", kind="conversation")
    add_call(2, "ready", kind="conversation")
    usage_row(store, 1, TODAY + 3, seconds=600)  # $0.06 at the default price: the $0.05 budget is spent
    error = "cycle failed: OperationalError: disk I/O error" if failing else None
    store.set_state(LAST_CYCLE_KEY, json.dumps({"at": NOW - 90, "seconds": 0.4, "error": error}))
    if failing:
        store.set_state(FAILING_KEY, json.dumps({"error": error, "since": NOW - 270, "at": NOW - 90, "count": 3}))


def build_fleet(tmp_path: Path, *, globex_failing: bool = True) -> Fleet:
    fleet = Fleet(tmp_path / "etc", tmp_path / "var")
    fleet.data.mkdir()
    for name, host, secrets, prices in (
        (
            "acme",
            "acme.amocrm.ru",
            (AMO_TOKEN, OPENAI_KEY, BOT_TOKEN),
            {
                "audio_price_per_minute_usd": 0.01,
                "input_token_price_per_million_usd": 1.0,
                "output_token_price_per_million_usd": 2.0,
                "daily_budget_usd": 0,
            },
        ),
        ("globex", "globex.kommo.com", GLOBEX_SECRETS, {"daily_budget_usd": 0.05}),
    ):
        (fleet.root / name).mkdir(parents=True)
        text = config_text(host, fleet.db(name), secrets, **prices)
        (fleet.root / name / "config.toml").write_text(text)
        store = Store.open(f"sqlite:///{fleet.db(name)}", NOW)  # migrates: this release's schema
        try:
            if name == "acme":
                seed_acme(store)
            else:
                seed_globex(store, globex_failing)
        finally:
            store.close()
    return fleet


def files(directory: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under `directory`: (size, mtime, owner), to prove nothing was written."""
    return {
        str(path.relative_to(directory)): (path.stat().st_size, path.stat().st_mtime_ns, path.stat().st_uid)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def lines(text: str) -> dict[str, str]:
    return {line.split(":", 1)[0]: line for line in text.splitlines()}


def day(timestamp: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def test_fleet_status_shows_each_instance_and_exits_1_when_one_fails_its_cycles(tmp_path: Path) -> None:
    fleet = build_fleet(tmp_path)
    result = run_cli("fleet", "status", "--root", str(fleet.root))
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""
    acme, globex = lines(result.stdout)["acme"], lines(result.stdout)["globex"]
    assert len(result.stdout.splitlines()) == 2
    month_usd = 0.302
    today_usd = 0.102 + (0.20 if month_start(NOW) == TODAY else 0)
    assert acme.startswith(f"acme: acme.amocrm.ru; last cycle {day(NOW - 30)} ok; ")
    assert "; waiting 3; failed 2; missed alerts today 2; " in acme
    assert f"; cost today ${today_usd:.2f}, month ${month_usd:.2f}" in acme
    assert f"PAUSED: amoCRM calls paused until {day(NOW + 7200)} (HTTP 403: IP blocked)" in acme
    assert "FAILING" not in acme and "budget" not in acme
    assert globex.startswith(
        f"globex: globex.kommo.com; last cycle {day(NOW - 90)} error: cycle failed: OperationalError: disk I/O error; "
    )
    assert "; waiting 1; failed 0; missed alerts today 0; cost today $0.06, month $0.06" in globex
    assert f"FAILING 3 cycle(s) since {day(NOW - 270)}: cycle failed: OperationalError" in globex
    assert f"PAUSED: daily budget $0.05 spent, transcriptions wait until {day(TODAY + 86400)}" in globex
    assert_no_secrets(result.stdout + result.stderr)


def assert_no_secrets(text: str) -> None:
    """Neither instance's secrets, nor a database password."""
    assert_no_secret(text)
    for secret in (*GLOBEX_SECRETS, *OTHER_SECRETS, DB_PASSWORD):
        assert secret not in text


def test_fleet_status_exits_0_when_every_instance_is_fine(tmp_path: Path) -> None:
    fleet = build_fleet(tmp_path, globex_failing=False)
    result = run_cli("fleet", "status", "--root", str(fleet.root))
    assert result.returncode == 0, result.stdout + result.stderr
    globex = lines(result.stdout)["globex"]
    assert f"last cycle {day(NOW - 90)} ok" in globex and "FAILING" not in globex
    assert "PAUSED: daily budget" in globex  # a pause is shown, but is no failure


def test_an_instance_that_cannot_be_read_says_why_and_the_others_still_print(tmp_path: Path) -> None:
    fleet = build_fleet(tmp_path, globex_failing=False)
    (fleet.root / "broken").mkdir()
    (fleet.root / "broken" / "config.toml").write_text("[openai]\ndaily_budget_usd = 'lots'\n")
    (fleet.root / "gone").mkdir()
    (fleet.root / "gone" / "config.toml").write_text(config_text("gone.amocrm.ru", fleet.db("gone"), OTHER_SECRETS))
    (fleet.root / "old").mkdir()
    (fleet.root / "old" / "config.toml").write_text(config_text("old.amocrm.ru", fleet.db("old"), OTHER_SECRETS))
    store = Store.open(f"sqlite:///{fleet.db('old')}", NOW)
    Migration.delete().where(Migration.name == "0010_event_raw").execute()
    store.close()
    (fleet.root / "pg").mkdir()
    (fleet.root / "pg" / "config.toml").write_text(
        config_text("pg.amocrm.ru", fleet.db("pg"), OTHER_SECRETS).replace(
            f"sqlite:///{fleet.db('pg')}", f"postgresql://bot:{DB_PASSWORD}@127.0.0.1:1/salesbot"
        )
    )
    (fleet.root / "not-an-instance").mkdir()  # no config.toml: not listed
    before = files(fleet.data)

    result = run_cli("fleet", "status", "--root", str(fleet.root))

    assert result.returncode == 1
    found = lines(result.stdout)
    assert list(found) == ["acme", "broken", "globex", "gone", "old", "pg"]  # by name
    assert found["broken"].startswith("broken: CANNOT READ: config invalid: openai.daily_budget_usd: ")
    assert found["gone"] == f"gone: CANNOT READ: database missing: sqlite:///{fleet.db('gone')}"
    assert found["old"] == "old: CANNOT READ: database at an older schema: start salesbot@old once so it migrates"
    assert found["pg"].startswith("pg: CANNOT READ: database unreadable (postgresql://bot:***@127.0.0.1:1/salesbot): ")
    assert found["acme"].startswith("acme: acme.amocrm.ru; last cycle")
    assert_no_secrets(result.stdout + result.stderr)
    assert files(fleet.data) == before  # the old database is not migrated; the missing one not created

    usage = run_cli("fleet", "usage", "--month", "2024-02", "--csv", "--root", str(fleet.root))
    assert usage.returncode == 1
    assert [row[0] for row in csv.reader(io.StringIO(usage.stdout))] == ["instance", "acme", "globex"]
    skipped = usage.stderr.splitlines()
    assert len(skipped) == 4 and all("skipped, cannot read" in line for line in skipped)
    assert "fleet usage: old: skipped, cannot read: database at an older schema" in usage.stderr
    assert_no_secrets(usage.stdout + usage.stderr)


def test_fleet_usage_csv_is_one_row_per_instance_for_the_utc_month(tmp_path: Path) -> None:
    fleet = build_fleet(tmp_path)
    result = run_cli("fleet", "usage", "--month", "2024-02", "--csv", "--root", str(fleet.root))
    assert result.returncode == 0, result.stderr  # failing cycles do not matter to usage
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows == [
        ["instance", "account", "audio_minutes", "input_tokens", "output_tokens", "cost_usd", "calls_analysed"],
        # 2 min x $0.01 + 1500 x $1/M + 301 x $2/M; calls 1 and 2 analysed
        ["acme", "acme.amocrm.ru", "2.00", "1500", "301", "0.0221", "2"],
        ["globex", "globex.kommo.com", "0.00", "0", "0", "0.0000", "0"],
    ]
    assert_no_secrets(result.stdout + result.stderr)


def test_fleet_usage_table_is_aligned(tmp_path: Path) -> None:
    fleet = build_fleet(tmp_path)
    result = run_cli("fleet", "usage", "--month", "2024-02", "--root", str(fleet.root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "instance  account           audio_minutes  input_tokens  output_tokens  cost_usd  calls_analysed",
        "acme      acme.amocrm.ru              2.0          1500            301      0.02               2",
        "globex    globex.kommo.com            0.0             0              0      0.00               0",
    ]


def test_usage_month_for_one_instance(tmp_path: Path) -> None:
    fleet = build_fleet(tmp_path)
    config = fleet.root / "acme" / "config.toml"
    table = run_cli("usage", "--month", "2024-02", config=config)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines() == [
        "audio_minutes  input_tokens  output_tokens  cost_usd  calls_analysed",
        "          2.0          1500            301      0.02               2",
    ]
    as_csv = run_cli("--config", str(config), "usage", "--month", "2024-03", "--csv")
    assert as_csv.returncode == 0, as_csv.stderr
    assert list(csv.reader(io.StringIO(as_csv.stdout))) == [
        ["audio_minutes", "input_tokens", "output_tokens", "cost_usd", "calls_analysed"],
        ["100.00", "0", "0", "1.0000", "0"],
    ]
    assert_no_secrets(table.stdout + table.stderr + as_csv.stdout + as_csv.stderr)


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "nov", "2026-11-01", "0000-05"])
def test_a_bad_month_exits_2_naming_it(tmp_path: Path, month: str) -> None:
    fleet = build_fleet(tmp_path)
    for args in (
        ("usage", "--month", month),
        ("fleet", "usage", "--month", month, "--root", str(fleet.root)),
    ):
        result = run_cli(*args, config=fleet.root / "acme" / "config.toml")
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr == f"salesbot-poller: --month: {month!r} is not a month (YYYY-MM, e.g. 2026-11)\n"


def test_a_root_without_instances_exits_2(tmp_path: Path) -> None:
    result = run_cli("fleet", "status", "--root", str(tmp_path))
    assert result.returncode == 2
    expected = f"salesbot-poller: fleet: no instances under {tmp_path} (each is {tmp_path}/NAME/config.toml)\n"
    assert result.stderr == expected


def test_fleet_commands_write_nothing_to_a_stopped_instance(tmp_path: Path) -> None:
    """A stopped service left a WAL database with no -wal/-shm: SQLite's `mode=ro` alone would
    create both (as root); the read-only store opens it immutable instead."""
    fleet = build_fleet(tmp_path)
    before = files(fleet.data)
    assert sorted(before) == ["acme.db", "globex.db"]
    for args in (("status",), ("usage", "--month", "2024-02"), ("usage", "--month", "2024-02", "--csv")):
        run_cli("fleet", *args, "--root", str(fleet.root))
    run_cli("usage", "--month", "2024-02", config=fleet.root / "acme" / "config.toml")
    assert files(fleet.data) == before


def test_fleet_commands_write_nothing_to_a_running_instance(tmp_path: Path) -> None:
    """The service holds its database open (a -wal and -shm exist, with commits not yet in
    the main file): the fleet reads through them and changes none of the files."""
    fleet = build_fleet(tmp_path, globex_failing=False)
    service = sqlite3.connect(fleet.db("acme"))
    try:
        service.execute("PRAGMA journal_mode=wal")
        service.execute(
            "UPDATE state SET value = ? WHERE key = ?",
            (json.dumps({"at": NOW - 5, "seconds": 1, "error": "only in the wal"}), LAST_CYCLE_KEY),
        )
        service.commit()
        before = files(fleet.data)
        assert {"acme.db-wal", "acme.db-shm"} <= set(before)
        result = run_cli("fleet", "status", "--root", str(fleet.root))
        assert f"last cycle {day(NOW - 5)} error: only in the wal" in lines(result.stdout)["acme"]
        assert result.returncode == 1
        run_cli("fleet", "usage", "--month", "2024-02", "--root", str(fleet.root))
        after = files(fleet.data)
        # A reader of a WAL database records its read mark in the -shm, the shared-memory index
        # through which SQLite connections coordinate (its mtime moves): no data, and the file
        # keeps its size and owner. The database and the -wal are untouched, nothing is added.
        assert after.keys() == before.keys()
        assert {name: stat for name, stat in after.items() if name != "acme.db-shm"} == {
            name: stat for name, stat in before.items() if name != "acme.db-shm"
        }
        size, _, owner = after["acme.db-shm"]
        assert (size, owner) == (before["acme.db-shm"][0], before["acme.db-shm"][2])
    finally:
        service.close()


def test_the_admins_salesbot_variables_do_not_reach_the_instances(tmp_path: Path) -> None:
    fleet = build_fleet(tmp_path)
    leaked = {
        "SALESBOT_AMOCRM_BASE_URL": "https://admin.amocrm.ru",
        "SALESBOT_STORAGE_DATABASE": f"sqlite:///{tmp_path}/admin.db",
        "SALESBOT_OPENAI_DAILY_BUDGET_USD": "0",
    }
    result = run_cli("fleet", "status", "--root", str(fleet.root), extra_env=leaked)
    assert "admin" not in result.stdout
    assert lines(result.stdout)["acme"].startswith("acme: acme.amocrm.ru; ")
    assert "PAUSED: daily budget" in lines(result.stdout)["globex"]
    assert not (tmp_path / "admin.db").exists()


def test_an_instances_salesbot_env_applies_as_its_unit_loads_it(tmp_path: Path) -> None:
    """The unit loads ROOT/NAME/salesbot.env: the host its service uses is the one shown."""
    fleet = build_fleet(tmp_path)
    (fleet.root / "acme" / "salesbot.env").write_text(
        '# moved to Kommo\nTZ=Europe/Moscow\n\nSALESBOT_AMOCRM_BASE_URL="https://acme.kommo.com"\n'
    )
    result = run_cli("fleet", "status", "--root", str(fleet.root))
    assert lines(result.stdout)["acme"].startswith("acme: acme.kommo.com; "), result.stdout
    assert lines(result.stdout)["globex"].startswith("globex: globex.kommo.com; ")  # its own file: none

    (fleet.root / "acme" / "salesbot.env").unlink()
    (fleet.root / "acme" / "salesbot.env").symlink_to("/etc/passwd")
    result = run_cli("fleet", "status", "--root", str(fleet.root))
    assert "salesbot.env" in lines(result.stdout)["acme"] and result.returncode == 1, result.stdout


def test_an_env_file_is_read_as_systemd_reads_it() -> None:
    from salesbot_poller.cli.fleet import env_file_values

    text = '; comment\n  SALESBOT_A = \'x y\'\nSALESBOT_B="q\\"z"\nPATH=/bin\nSALESBOT_A=last\nnot a line\n'
    assert env_file_values(text) == {"SALESBOT_A": "last", "SALESBOT_B": 'q"z'}
