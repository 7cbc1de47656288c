"""`fleet` run as root against instances whose users plant traps in their own directories.

Each instance's state directory belongs to its user (uid 65534 here, 0700), as
`/var/lib/salesbot/NAME` does; the configs are root's, as `/etc/salesbot/NAME`. The users
symlink their database's -shm and -wal to a root file outside (as they would /etc/shadow),
their database to another instance's, a key file to the root file, make a key file a FIFO or
1.5 MB, symlink a config. Root's `fleet status` must name each trap on the instance's line,
follow none of them, and leave every file outside as it was (owner, mode, content) and every
instance directory without a new file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from salesbot_poller.cli.fleet_files import NotRead, check_unchanged, open_dir, read_capped
from salesbot_poller.config import parse_config
from salesbot_poller.errors import ConfigError
from salesbot_poller.lanes import LAST_CYCLE_KEY
from salesbot_poller.store import MIGRATIONS, Store
from tests.conftest import run_cli

USER, OTHER = 65534, 65533  # the instances' users (nobody, and another unprivileged uid)
NOW = int(time.time())
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs the fleet as root, as docs/many-accounts.md has it run")


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory the instances' users may pass through, as /var/lib/salesbot (pytest's own
    temporary directories are root's, 0700: a user could not reach its database there)."""
    path = Path(tempfile.mkdtemp(prefix="fleet-hostile-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def instance(base: Path, name: str, *, owner: int = USER, key_file: Path | None = None, cycle: str = "ok") -> Path:
    """Instance NAME: a root config in base/etc/NAME, a database in base/state/NAME owned by
    `owner` (0700 directory, 0600 file) whose last cycle says `cycle`; its state directory."""
    state = base / "state" / name
    state.mkdir(parents=True)
    database = state / "salesbot.db"
    store = Store.open(f"sqlite:///{database}", NOW)
    try:
        store.set_state(
            LAST_CYCLE_KEY, json.dumps({"at": NOW, "seconds": 1, "error": None if cycle == "ok" else cycle})
        )
    finally:
        store.close()
    for path in (state, database):
        os.chown(path, owner, owner)
    config = base / "etc" / name / "config.toml"
    config.parent.mkdir(parents=True)
    key = f'api_key_file = "{key_file}"' if key_file else ""
    config.write_text(
        f'[amocrm]\nbase_url = "https://{name}.amocrm.ru"\n[openai]\n{key}\n'
        f'[storage]\ndatabase = "sqlite:///{database}"\naudio_dir = "{state}/audio"\n'
    )
    return state


def snapshot(*roots: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every file under `roots` (symlinks not followed): owner, group, mode and sha256 of its
    content (a FIFO or a symlink: its type only, never opened)."""
    found = {}
    for root in roots:
        for path in sorted([root, *root.rglob("*")]):
            info = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(info.st_mode) else "-"
            found[str(path)] = (
                info.st_uid,
                info.st_gid,
                stat.S_IMODE(info.st_mode) | stat.S_IFMT(info.st_mode),
                digest,
            )
    return found


def lines(text: str) -> dict[str, str]:
    return {line.split(":", 1)[0]: line for line in text.splitlines()}


def test_root_follows_no_trap_an_instance_user_plants(base: Path) -> None:
    outside = base / "outside"
    outside.mkdir()
    shadow = outside / "shadow"
    shadow.write_text("root:$6$hash:19000:0:99999:7:::\n")
    shadow.chmod(0o640)
    instance(base, "good")
    shm = instance(base, "shm")
    (shm / "salesbot.db-shm").symlink_to(shadow)
    wal = instance(base, "wal")
    (wal / "salesbot.db-wal").symlink_to(shadow)
    other = instance(base, "other", owner=OTHER, cycle="the other instance's figures")
    stolen = instance(base, "stolen")
    (stolen / "salesbot.db").unlink()
    (stolen / "salesbot.db").symlink_to(other / "salesbot.db")
    keys = base / "state" / "keys"
    keys.mkdir()
    os.chown(keys, USER, USER)
    instance(base, "keylink", key_file=keys / "link")
    (keys / "link").symlink_to(shadow)
    instance(base, "fifo", key_file=keys / "fifo")
    os.mkfifo(keys / "fifo")
    instance(base, "big", key_file=keys / "big")
    with (keys / "big").open("wb") as handle:
        handle.truncate(1_500_000)
    instance(base, "cfglink")
    (base / "etc" / "cfglink" / "config.toml").unlink()
    (base / "etc" / "cfglink" / "config.toml").symlink_to(base / "etc" / "good" / "config.toml")
    mixed = instance(base, "mixed")
    os.chown(mixed / "salesbot.db", OTHER, OTHER)
    before = snapshot(base)

    result = run_cli("fleet", "status", "--root", str(base / "etc"), child=True, timeout=60)

    got = lines(result.stdout)
    assert result.returncode == 1, result.stderr
    assert got["good"].startswith("good: good.amocrm.ru; last cycle ") and " ok; " in got["good"]
    assert got["other"].startswith("other: other.amocrm.ru; last cycle ")
    state = base / "state"
    refused = {
        "shm": f"{state}/shm/salesbot.db-shm: is a symlink, not read",
        "wal": f"{state}/wal/salesbot.db-wal: is a symlink, not read",
        "stolen": f"{state}/stolen/salesbot.db: is a symlink, not read",
        "keylink": f"config invalid: openai.api_key_file: cannot read {keys}/link: is a symlink, not read",
        "fifo": f"config invalid: openai.api_key_file: cannot read {keys}/fifo: is not a regular file, not read",
        "big": f"config invalid: openai.api_key_file: cannot read {keys}/big: larger than 1048576 bytes, not read",
        "cfglink": f"config invalid: cannot read {base}/etc/cfglink/config.toml: is a symlink, not read",
        "mixed": f"{state}/mixed/salesbot.db: owned by uid {OTHER} inside a directory of uid {USER}, not read",
    }
    assert {name: got[name] for name in refused} == {
        name: f"{name}: CANNOT READ: {reason}" for name, reason in refused.items()
    }
    assert "the other instance's figures" not in got["stolen"]
    # Nothing outside changed owner, mode or content; no instance directory gained a file.
    assert snapshot(base) == before


def test_a_users_instance_is_read_through_its_running_services_wal(base: Path) -> None:
    """Root reads a user's database that its service holds open (commits still only in the
    -wal) as that user: the figures are current, and the -wal and -shm stay the user's."""
    state = instance(base, "acme")
    service = Store.open(f"sqlite:///{state / 'salesbot.db'}", NOW)  # root: SQLite gives its -wal/-shm to the owner
    try:
        service.set_state(LAST_CYCLE_KEY, json.dumps({"at": NOW, "seconds": 1, "error": "only in the wal"}))
        names = sorted(path.name for path in state.iterdir())
        assert names == ["salesbot.db", "salesbot.db-shm", "salesbot.db-wal"]
        # In a process of its own, as in use: a fork of this one, which has the database open
        # in SQLite, would share SQLite's per-process lock state with the service's connection.
        result = run_cli("fleet", "status", "--root", str(base / "etc"), child=True)
        assert "error: only in the wal" in result.stdout, result.stdout + result.stderr
        assert sorted(path.name for path in state.iterdir()) == names
        assert {(state / name).stat().st_uid for name in names} == {USER}
    finally:
        service.close()


def test_a_database_at_a_newer_schema_is_reported_as_newer(base: Path) -> None:
    state = instance(base, "acme")
    store = Store.open(f"sqlite:///{state / 'salesbot.db'}", NOW)
    try:
        store.db.execute_sql("INSERT INTO migration (name, applied_at) VALUES ('9999_from_the_future', 0)")
    finally:
        store.close()
    result = run_cli("fleet", "status", "--root", str(base / "etc"))
    assert result.returncode == 1
    assert result.stdout == (
        f"acme: CANNOT READ: database schema {len(MIGRATIONS) + 1} is newer than this salesbot-poller knows "
        f"({len(MIGRATIONS)}): "
        "upgrade salesbot-poller\n"
    )


def test_a_directory_swapped_after_the_walk_is_noticed(base: Path) -> None:
    (base / "a").mkdir()
    walked = open_dir(base / "a")
    try:
        (base / "a").rename(base / "b")
        (base / "a").mkdir()
        with pytest.raises(NotRead, match="replaced while being read"):
            check_unchanged(walked)
    finally:
        os.close(walked.fd)


def test_small_files_are_read_capped_and_only_when_regular(base: Path) -> None:
    (base / "key").write_text("sk-test\n")
    assert read_capped(base / "key", 100) == "sk-test\n"
    with pytest.raises(NotRead, match="larger than 4 bytes"):
        read_capped(base / "key", 4)
    with pytest.raises(NotRead, match="is not a regular file"):
        read_capped("/dev/zero", 100)
    with pytest.raises(NotRead, match="is not a regular file"):
        read_capped(base, 100)


def test_a_rubric_file_is_read_through_the_fleets_reader(base: Path) -> None:
    """`rubric_file` is read while the config is validated: the fleet's reader reaches it too."""
    state = base / "state"
    state.mkdir()
    os.chown(state, USER, USER)
    real = base / "rubric.toml"
    real.write_text('[[rubric]]\nid = "price"\ntitle = "Price"\n', encoding="utf-8")
    (state / "rubric.toml").symlink_to(real)
    raw = {"profiles": [{"name": "A", "rubric_file": str(state / "rubric.toml")}]}
    assert parse_config(dict(raw), {}, require_secrets=False).profiles[0].rubric[0].id == "price"
    with pytest.raises(ConfigError) as caught:
        parse_config(dict(raw), {}, require_secrets=False, read_file=read_capped)
    assert caught.value.problems == [
        f"profiles[1].rubric_file: cannot read {state}/rubric.toml: is a symlink, not read"
    ]
