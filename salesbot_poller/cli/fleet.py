"""Many instances on one server: `fleet status`, `fleet usage`, and `usage` for one instance.

Contract:
- An instance is a directory ROOT/NAME holding a `config.toml` (ROOT: /etc/salesbot by
  default), served by `salesbot@NAME`; instances are listed by name.
- Configs are loaded with no secrets required and with the instance's own environment only:
  the SALESBOT_* lines of ROOT/NAME/salesbot.env, the file its unit loads
  (`EnvironmentFile=`), read as systemd reads it (`env_file_values`); the admin's SALESBOT_*
  variables never apply to an instance (nor one instance's to another), so the host shown is
  the one the service really uses.
- Nothing is written to any database, and nothing is created, chowned or chmodded: a SQLite
  database is read by `cli.fleet_sqlite` (as root, in a child process dropped to the
  instance's user; immutable when the service is stopped), other databases with
  `Store.open_readonly`. No run lock is taken. These commands run as root beside the
  running services.
- An instance's files are its users' to tamper with: the config, the files it names
  (`<key>_file`, `rubric_file`) and the database are reached without following a user's
  symlink, must be regular files, and the config's files are size-capped
  (`cli.fleet_files`); a refusal is the instance's reason ("<path>: is a symlink, not read").
- A database whose schema is older than this release is not read: its line says to start
  the service once, so that it migrates. One at a newer schema says to upgrade
  salesbot-poller.
- No secret or database password is printed: a database is named through `safe_url`, and
  every line of an instance is redacted with that instance's secrets.
- An instance that cannot be read (config invalid, a file refused, database missing,
  unreadable or at another schema) says why on its line (`fleet status`) or on stderr
  (`fleet usage`, whose output stays a clean table or CSV); the others are still shown; the
  command exits 1.
- `fleet status` exits 1 as well when an instance has failing cycles (a failing-cycles
  record, or its last cycle recorded an error).
- Days and months are UTC. Costs are estimates from each instance's configured prices.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TypeVar, cast
from urllib.parse import urlsplit

import peewee

from salesbot_poller.cli.common import (
    EXIT_CHECK_FAILED,
    EXIT_CONFIG,
    EXIT_OK,
    err,
    load,
    redacting_out,
    utc_now,
    when_text,
    zone,
)
from salesbot_poller.cli.fleet_files import NotRead, Unreadable, read_capped
from salesbot_poller.cli.fleet_sqlite import read_sqlite
from salesbot_poller.config import Config, OpenAIConfig, load_config, safe_url
from salesbot_poller.domain import TERMINAL_STAGES, Stage
from salesbot_poller.errors import ConfigError
from salesbot_poller.lanes import LAST_CYCLE_KEY
from salesbot_poller.logs import redact
from salesbot_poller.pipeline import usage
from salesbot_poller.pipeline.health import failing_record
from salesbot_poller.pipeline.prices import Cost
from salesbot_poller.services.throttle import AmoPause, AmoPaused
from salesbot_poller.store import MIGRATIONS, Store, sqlite_file
from salesbot_poller.store.postgres import one_line

DEFAULT_ROOT = Path("/etc/salesbot")
CONFIG_NAME = "config.toml"
T = TypeVar("T")
ENV_FILE_NAME = "salesbot.env"  # beside config.toml: `EnvironmentFile=` of salesbot@.service
ENV_FILE_LIMIT = 64 * 1024
Out = Callable[[str], None]


@dataclass(frozen=True)
class Instance:
    name: str
    config_file: Path

    @property
    def service(self) -> str:
        return f"salesbot@{self.name}"


def find_instances(root: Path) -> list[Instance]:
    """Every ROOT/NAME holding a config.toml (a symlink too: it is listed, then refused), by name."""
    if not root.is_dir():
        return []
    found = [
        Instance(path.name, path / CONFIG_NAME)
        for path in root.iterdir()
        if path.is_dir() and os.path.lexists(path / CONFIG_NAME)
    ]
    return sorted(found, key=lambda instance: instance.name)


def load_instance_config(instance: Instance) -> Config:
    """The instance's config, without its secrets required, with its own salesbot.env as the
    only environment; it and the files it names read by `read_capped` (no symlink of a user,
    sizes capped)."""
    env_file = instance.config_file.parent / ENV_FILE_NAME
    try:
        environ = env_file_values(read_capped(env_file, ENV_FILE_LIMIT)) if os.path.lexists(env_file) else {}
    except OSError as exc:  # a user's symlink, a FIFO, too large: the instance's line says so
        raise Unreadable(str(exc) if isinstance(exc, NotRead) else f"{env_file}: {exc.strerror}") from None
    try:
        return load_config(instance.config_file, environ, require_secrets=False, read_file=read_capped)
    except ConfigError as exc:
        raise Unreadable("config invalid: " + "; ".join(exc.problems)) from None


def read_database(config: Config, service: str, read: Callable[[Store], T]) -> T:
    """Open the instance's database read-only, check its schema, `read` it, close it;
    `Unreadable` says why not. A SQLite database is read by `cli.fleet_sqlite` (perhaps in a
    child process as the instance's user), so `read` returns a value JSON carries."""
    url = config.storage.database
    checked = partial(_schema_checked, read=read, service=service)
    try:
        if url.startswith("sqlite:"):
            file = sqlite_file(url)
            if file is None:
                raise Unreadable(f"database missing: {safe_url(url)} is not a database file")
            return cast(T, read_sqlite(file, checked))
        store = Store.open_readonly(url)
        try:
            return checked(store)
        finally:
            store.close()
    except NotRead as exc:
        raise Unreadable(str(exc)) from None
    except FileNotFoundError:
        raise Unreadable(f"database missing: {safe_url(url)}") from None
    except (OSError, peewee.PeeweeException) as exc:
        raise _unreadable(url, exc, config) from None


def _schema_checked(store: Store, read: Callable[[Store], T], service: str) -> T:
    """`read(store)` when the database's schema is this release's; else `Unreadable`."""
    missing, unknown = store.missing_migrations(), store.unknown_migrations()
    if unknown:
        recorded = len(MIGRATIONS) - len(missing) + len(unknown)
        raise Unreadable(
            f"database schema {recorded} is newer than this salesbot-poller knows ({len(MIGRATIONS)}): "
            "upgrade salesbot-poller"
        )
    if missing:
        raise Unreadable(f"database at an older schema: start {service} once so it migrates")
    return read(store)


def _unreadable(url: str, exc: Exception, config: Config) -> Unreadable:
    return Unreadable(f"database unreadable ({safe_url(url)}): {redact(one_line(exc), config.secrets())}")


def env_file_values(text: str) -> dict[str, str]:
    """The SALESBOT_* assignments of an `EnvironmentFile=` as systemd reads it: `KEY=VALUE`
    lines, blank lines and lines starting with # or ; skipped, a value in single or double
    quotes unquoted (a backslash escapes the next character inside double quotes); the last
    assignment of a key wins. Other variables are left out: only SALESBOT_* reach the config."""
    found: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            quote, value = value[0], value[1:-1]
            if quote == '"':
                value = re.sub(r"\\(.)", r"\1", value)
        if key.startswith("SALESBOT_"):
            found[key] = value
    return found


def account_host(config: Config) -> str:
    return urlsplit(str(config.amocrm.base_url)).hostname or "?"


@dataclass(frozen=True)
class InstanceStatus:
    text: str
    failing: bool


def instance_status(store: Store, config: Config, now: int) -> InstanceStatus:
    """The one-line summary of an instance (after its name), and whether its cycles fail;
    its times in the instance's `amocrm.timezone`, the zone named."""
    tz = zone(config)
    raw = store.get_state(LAST_CYCLE_KEY)
    try:
        last = json.loads(raw) if raw else None
    except ValueError:
        last = {"error": "the last cycle's record is unreadable"}
    failing = failing_record(store)
    if last is None:
        cycle = "last cycle never"
    else:
        cycle = f"last cycle {when_text(last.get('at'), tz)} " + (
            f"error: {last['error']}" if last.get("error") else "ok"
        )
    counts = store.stage_counts()
    finished = {stage.value for stage in TERMINAL_STAGES}
    waiting = sum(n for stage, n in counts.items() if stage not in finished)
    failed = counts.get(Stage.FAILED.value, 0) + counts.get(Stage.QUARANTINED.value, 0)
    today = usage.cost_between(store, config.openai, usage.day_start(now)).text()
    month = usage.cost_between(store, config.openai, usage.month_start(now)).text()
    parts = [
        account_host(config),
        cycle,
        f"waiting {waiting}",
        f"failed {failed}",
        f"missed alerts today {store.missed_alerted_since(usage.day_start(now))}",
        f"cost today {today}, month {month}",
    ]
    if failing:
        parts.append(f"FAILING {failing['count']} cycle(s) since {when_text(failing['since'], tz)}: {failing['error']}")
    try:
        AmoPause(lambda: datetime.fromtimestamp(now, UTC), store, tz).check()
    except AmoPaused as exc:
        parts.append(f"PAUSED: {exc}")
    if usage.budget_spent(store, config.openai, now):
        resume = datetime.fromtimestamp(usage.day_start(now), UTC) + timedelta(days=1)
        parts.append(
            f"PAUSED: daily budget ${config.openai.daily_budget_usd:.2f} spent, "
            f"transcriptions wait until {when_text(resume.timestamp(), tz)}"
        )
    return InstanceStatus("; ".join(parts), bool(failing) or bool(last and last.get("error")))


def _status_row(store: Store, config: Config, now: int) -> tuple[str, bool]:
    state = instance_status(store, config, now)
    return state.text, state.failing


def fleet_status(instances: Sequence[Instance], now: int, out: Out) -> bool:
    """One line per instance; False when one fails its cycles or cannot be read."""
    ok = True
    for instance in instances:
        secrets: list[str] = []
        try:
            config = load_instance_config(instance)
            secrets = config.secrets()
            text, failing = read_database(config, instance.service, partial(_status_row, config=config, now=now))
            line = f"{instance.name}: {text}"
            ok = ok and not failing
        except Unreadable as exc:
            line = f"{instance.name}: CANNOT READ: {exc}"
            ok = False
        out(redact(line, secrets))
    return ok


USAGE_COLUMNS = ("audio_minutes", "input_tokens", "output_tokens", "cost_usd", "calls_analysed")


def _cells(report: usage.MonthReport, *, exact: bool) -> list[str]:
    """A report's cells: more decimals in CSV (it is re-billed), as `status` shows at the terminal."""
    return [
        f"{report.audio_minutes:.2f}" if exact else f"{report.audio_minutes:.1f}",
        str(report.totals.input_tokens),
        str(report.totals.output_tokens),
        _usd_cell(report.cost, 4 if exact else 2),
        str(report.calls_analysed),
    ]


def _usd_cell(cost: Cost, digits: int) -> str:
    """A number when every model was priced (a billing sheet sums it), else what is missing."""
    return f"{cost.usd:.{digits}f}" if not cost.unpriced else cost.text(digits)


def render(header: Sequence[str], rows: Sequence[Sequence[str]], as_csv: bool) -> list[str]:
    """A header and rows as CSV lines, or as a table aligned on its columns (text columns to
    the left, numbers to the right)."""
    if as_csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return buffer.getvalue().splitlines()
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    numeric = [bool(rows) and all(_is_number(row[i]) for row in rows) for i in range(len(header))]
    return [
        "  ".join(
            (cell.rjust(width) if right else cell.ljust(width))
            for cell, width, right in zip(row, widths, numeric, strict=True)
        ).rstrip()
        for row in (header, *rows)
    ]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _usage_cells(store: Store, prices: OpenAIConfig, start: int, end: int, exact: bool) -> list[str]:
    return _cells(usage.month_report(store, prices, start, end), exact=exact)


def instance_usage(config: Config, service: str, month: str, as_csv: bool, out: Out) -> None:
    """`usage --month`: one instance's month (`Unreadable` when its database cannot be read)."""
    start, end = usage.month_bounds(month)
    cells = read_database(
        config, service, partial(_usage_cells, prices=config.openai, start=start, end=end, exact=as_csv)
    )
    for line in render(USAGE_COLUMNS, [cells], as_csv):
        out(line)


def fleet_usage(instances: Sequence[Instance], month: str, as_csv: bool, out: Out, err: Out) -> bool:
    """`fleet usage --month`: a row per instance; False when one cannot be read (skipped, with
    a line on stderr: the table stays clean for billing)."""
    start, end = usage.month_bounds(month)
    ok = True
    rows = []
    for instance in instances:
        secrets: list[str] = []
        try:
            config = load_instance_config(instance)
            secrets = config.secrets()
            cells = read_database(
                config,
                instance.service,
                partial(_usage_cells, prices=config.openai, start=start, end=end, exact=as_csv),
            )
            rows.append([instance.name, account_host(config), *cells])
        except Unreadable as exc:
            err(redact(f"fleet usage: {instance.name}: skipped, cannot read: {exc}", secrets))
            ok = False
    for line in render(("instance", "account", *USAGE_COLUMNS), rows, as_csv):
        out(line)
    return ok


def run(args: argparse.Namespace, config: Config | None) -> int:
    """`fleet status`, `fleet usage` and `usage`: they read databases, never write one, and
    take no lock. `--month` is checked first, then `usage` loads its own config (its
    `poller.log_level` does not apply: the output is a table)."""
    if getattr(args, "month", None) is not None:
        try:
            usage.month_bounds(args.month)
        except ValueError as exc:
            err(f"--month: {exc}")
            return EXIT_CONFIG
    if args.command == "fleet":
        root = Path(args.root)
        instances = find_instances(root)
        if not instances:
            err(f"fleet: no instances under {root} (each is {root}/NAME/{CONFIG_NAME})")
            return EXIT_CONFIG
        if args.fleet_command == "status":
            ok = fleet_status(instances, int(utc_now().timestamp()), print)
        else:
            ok = fleet_usage(instances, args.month, args.csv, print, err)
        return EXIT_OK if ok else EXIT_CHECK_FAILED
    config = load(args, require_secrets=False, log_level=False)
    try:
        instance_usage(config, "the service", args.month, args.csv, redacting_out(config))
    except Unreadable as exc:
        err(redact(str(exc), config.secrets()))
        return EXIT_CHECK_FAILED
    return EXIT_OK
