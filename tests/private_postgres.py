"""A PostgreSQL server of one test's own, to crash and restart at will (the shared server of
`.ci/postgres.sh` serves other tests and other sessions at once: it is never stopped).

`private_postgres()` runs Debian's `initdb` into a new directory under /tmp and starts the
server with `pg_ctl` on a free port of 127.0.0.1, trust authentication, loopback only, as the
`postgres` OS user when run as root (initdb refuses root). It yields a `PrivateServer` whose
`crash()` SIGKILLs the postmaster and every backend (as a power cut of the server process
would: no shutdown, crash recovery at the next start) and `start()` brings it back on the same
port. Everything is stopped and removed after the block.

Without the server binaries the test is skipped, except under CI (`tests.databases.under_ci`),
where it fails: `.ci/run` installs them (`.ci/postgres.sh`).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.databases import under_ci

START_TIMEOUT = 60


def server_binaries() -> Path | None:
    """The newest installed PostgreSQL's bin directory with initdb and pg_ctl, or None."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    if not found:
        return None
    bindir = max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return bindir if (bindir / "pg_ctl").exists() and (bindir / "postgres").exists() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (the postmaster's backends and helpers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in () may hold spaces
        if ppid == pid:
            found.append(int(entry))
    return found


class PrivateServer:
    """One private PostgreSQL server (see the module docstring)."""

    def __init__(self, bindir: Path, root: Path, port: int, as_user: list[str]) -> None:
        self.bindir, self.root, self.port, self._as = bindir, root, port, as_user
        self.data = root / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{port}/salesbot"

    def _run(self, tool: str, *args: str, timeout: float = START_TIMEOUT) -> None:
        done = subprocess.run(
            [*self._as, str(self.bindir / tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        options = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.root}'",
            "fsync = off",  # a crash of the server process, not of the machine: the page cache keeps it all
            "shared_buffers = 16MB",
            "max_connections = 40",
        ]
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n".join(options) + "\n")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")

    def create_database(self) -> None:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "salesbot")

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def crash(self) -> None:
        """SIGKILL the postmaster and all its children: no shutdown, nothing flushed."""
        pid = self.postmaster_pid()
        assert pid is not None, "the private server is not running"
        os.kill(pid, signal.SIGSTOP)  # it forks no new backend while its children are collected
        for child in _children(pid):
            os.kill(child, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        if self.postmaster_pid() is not None and Path(f"/proc/{self.postmaster_pid()}").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def private_postgres() -> Iterator[PrivateServer]:
    """A private server for the block (see the module docstring); skips without binaries."""
    bindir = server_binaries()
    why = "PostgreSQL's server binaries (/usr/lib/postgresql/*/bin) are not installed"
    as_user: list[str] = []
    if bindir is not None and os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        except KeyError:
            bindir, why = None, "running as root without a `postgres` OS user for initdb"
    if bindir is None:
        if under_ci():
            pytest.fail(f"CI must run this test: {why} (.ci/postgres.sh installs them)")
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="salesbot-pg-"))
    if as_user:
        info = pwd.getpwnam("postgres")
        os.chown(root, info.pw_uid, info.pw_gid)
    server = PrivateServer(bindir, root, _free_port(), as_user)
    try:
        server.init()
        server.start()
        server.create_database()
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)
