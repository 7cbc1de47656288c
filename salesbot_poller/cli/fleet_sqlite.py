"""Reading an instance's SQLite database as root without giving the instance's user a lever.

Contract:
- `read_sqlite(file, read)` opens `file` read-only, calls `read(store)` and returns what it
  returns, which must be a value JSON carries (it may come back from a child process).
- The file is reached through `fleet_files` (no symlink of a user followed, ownership never
  passing from one user to another) and must be a regular file; so must a -wal, -shm or
  -journal beside it ("<path>: is a symlink, not read").
- As root, when the database's directory (or, in a root directory, the file) belongs to a
  user, the reading is done in a child process that first drops to that user (its uid, the
  gid of what it owns, no supplementary groups): whatever SQLite then opens or creates (a
  -shm, a -wal), it does with the user's rights, so the kernel refuses what a symlink planted
  after our look points at, and SQLite's habit, as root, of chowning a -wal/-shm to the
  database's owner cannot happen. The answer comes back as JSON through a pipe (never pickle:
  the child runs as the user), within `CHILD_TIMEOUT` seconds.
- A WAL database without a -wal (the service stopped, or idle since its last checkpoint) is
  opened `mode=ro&immutable=1` through `/proc/self/fd/N`, the descriptor opened and checked
  here: no -wal/-shm created, no lock taken. SQLite resolves that link to the file's path and
  opens the path again, so the descriptor SQLite then holds is checked to be the same file
  (device, inode). A read that overlapped a checkpoint (the file's size or mtime moved) is
  done again, at most `ATTEMPTS` times.
- With a -wal (the service has the database open) the file is opened `mode=ro` by its path,
  through the service's -wal and -shm (a reader's mark goes in the -shm): as the instance's
  user (above), or as root only when no user but root can change the directories on the way
  (`Dir.trusted`: a service run as root).
- Nothing here creates, chowns or chmods anything; the database is never copied.
"""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from salesbot_poller.cli.fleet_files import Dir, NotRead, Unreadable, check_unchanged, open_dir, open_file
from salesbot_poller.store import WAL_FORMAT, Store
from salesbot_poller.store.postgres import one_line

ATTEMPTS = 3
CHILD_TIMEOUT = 120.0  # SQLite's busy timeout is 30 s; a read is a handful of queries
ANSWER_LIMIT = 1 << 20
COMPANIONS = ("-wal", "-shm", "-journal")
_TORN = {"torn": True}
Read = Callable[[Store], Any]


class ReadFailed(OSError):
    """The reading failed; the text says how (an error of SQLite, of the child process)."""


def read_sqlite(file: Path, read: Read) -> Any:
    """`read` the SQLite database `file` (see the module contract)."""
    for _ in range(ATTEMPTS):
        answer = _attempt(Path(os.path.abspath(file)), read)
        if answer != _TORN:
            return _decode(answer)
    raise Unreadable(f"database changed during every read ({file}): try again")


def _attempt(file: Path, read: Read) -> dict[str, Any]:
    directory = open_dir(file.parent)
    try:
        fd, opened = open_file(directory, file.name, file, None)
        try:
            present = _companions(directory, file)
            immutable = os.pread(fd, 20, 0)[18:20] == WAL_FORMAT and "-wal" not in present
            uid, gid = _reader(directory, opened)
            work = partial(_outcome, partial(_read, fd, opened, file, immutable, read))
            if os.geteuid() == 0 and uid != 0:
                answer = _as_user(uid, gid, work, keep=fd)
            else:
                if os.geteuid() == 0 and not immutable and not directory.trusted:
                    raise NotRead(file.parent, "a user other than root can change it: its -wal is not read as root")
                answer = work()
        finally:
            os.close(fd)
        check_unchanged(directory)
    finally:
        os.close(directory.fd)
    return answer


def _companions(directory: Dir, file: Path) -> set[str]:
    """The companion files beside the database (each checked to be a regular file)."""
    present = set()
    for suffix in COMPANIONS:
        name = file.name + suffix
        try:
            entry = os.stat(name, dir_fd=directory.fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(entry.st_mode):
            raise NotRead(file.parent / name, "is a symlink, not read")
        if not stat.S_ISREG(entry.st_mode):
            raise NotRead(file.parent / name, "is not a regular file, not read")
        present.add(suffix)
    return present


def _reader(directory: Dir, opened: os.stat_result) -> tuple[int, int]:
    """Who reads: the directory's owner, else the file's (root only when both are root's)."""
    uid = directory.stat.st_uid or opened.st_uid
    gid = opened.st_gid if opened.st_uid == uid else directory.stat.st_gid
    return uid, gid


def _descriptors_of(opened: os.stat_result) -> set[str]:
    """This process's descriptors open on the file `opened` (device and inode)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        raise NotRead("/proc/self/fd", "cannot be listed: which file SQLite opens cannot be checked") from None
    found = set()
    for name in names:
        try:
            now = os.stat(f"/proc/self/fd/{name}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
        if (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino):
            found.add(name)
    return found


def _read(fd: int, opened: os.stat_result, file: Path, immutable: bool, read: Read) -> dict[str, Any]:
    uri = f"file:/proc/self/fd/{fd}?mode=ro&immutable=1" if immutable else f"file:{quote(str(file))}?mode=ro"
    before = _descriptors_of(opened)
    store = Store.open_readonly(uri)  # SQLite opens the main file here, at the connection
    try:
        if not _descriptors_of(opened) - before:  # SQLite's descriptor is on another file
            raise NotRead(file, "changed while being opened, not read")
        value = read(store)
        now = os.fstat(fd)
        if immutable and (now.st_size, now.st_mtime_ns) != (opened.st_size, opened.st_mtime_ns):
            return _TORN
        return {"ok": value}
    finally:
        store.close()


def _outcome(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """What `work` returned, or the error it raised, as JSON can carry it (`_decode` undoes it)."""
    try:
        return work()
    except NotRead as exc:
        return {"not_read": [exc.path, exc.reason]}
    except Unreadable as exc:
        return {"unreadable": str(exc)}
    except FileNotFoundError as exc:
        return {"missing": str(exc)}
    except Exception as exc:  # SQLite's or the read's: shown on the instance's line, as in-process
        return {"error": one_line(exc)}


def _decode(answer: dict[str, Any]) -> Any:
    if "ok" in answer:
        return answer["ok"]
    if "not_read" in answer:
        raise NotRead(*answer["not_read"])
    if "unreadable" in answer:
        raise Unreadable(answer["unreadable"])
    if "missing" in answer:
        raise FileNotFoundError(answer["missing"])
    raise ReadFailed(str(answer.get("error", "the reader gave no answer")))


def _as_user(uid: int, gid: int, work: Callable[[], dict[str, Any]], keep: int) -> dict[str, Any]:
    """`work()` in a child process running as `uid`/`gid` (no other group), holding no
    descriptor of root's but `keep` and its answer's pipe: a child taken over through a
    crafted database could not write to the terminal nor reach another open file. The
    process must hold no SQLite connection to the database (a child shares SQLite's
    per-process lock state, whose descriptors it has closed): the CLI holds none."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            null = os.open(os.devnull, os.O_RDWR)
            for std in (0, 1, 2):
                os.dup2(null, std)
            low, high = sorted((keep, wfd))
            os.closerange(3, low)
            os.closerange(low + 1, high)
            os.closerange(high + 1, os.sysconf("SC_OPEN_MAX"))
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            data = json.dumps(work()).encode()
            while data:
                data = data[os.write(wfd, data) :]
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    try:
        return _answer(rfd, pid)
    finally:
        os.close(rfd)


def _answer(rfd: int, pid: int) -> dict[str, Any]:
    deadline = time.monotonic() + CHILD_TIMEOUT
    data, failure = b"", ""
    while not failure:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([rfd], [], [], left)[0]:
            failure = f"the reader process gave no answer within {CHILD_TIMEOUT:.0f} s"
            break
        chunk = os.read(rfd, 65536)
        if not chunk:
            break
        data += chunk
        if len(data) > ANSWER_LIMIT:
            failure = "the reader process answered more than expected"
    if failure:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if failure:
        raise ReadFailed(failure)
    if os.waitstatus_to_exitcode(status) != 0 or not data:
        raise ReadFailed(f"the reader process failed (exit status {os.waitstatus_to_exitcode(status)})")
    try:
        answer = json.loads(data)
    except ValueError:
        raise ReadFailed("the reader process answered garbage") from None
    if not isinstance(answer, dict):
        raise ReadFailed("the reader process answered garbage")
    return answer
