"""Reading another user's files as root without being led astray: the `fleet` commands' opens.

Contract:
- `open_dir(path)` walks `path` from `/` one component at a time with `O_NOFOLLOW`, holding
  the directory it stands in open, and returns the last one open (`Dir`). A symlink on the way
  is followed only when root owns it AND the directory holding it (root put it there); any
  other is refused: `NotRead("<path>: is a symlink, not read")`.
- Ownership may pass from root to a user, never from one user to another: an entry of a
  directory owned by uid X must be owned by X or root (`NotRead`), so a user cannot lead the
  walk into what another user owns (another instance's database).
- `open_file(dir, name, path, limit)` opens a regular file (not a symlink, FIFO, device or
  directory) in a walked directory, checks that the file opened is the one looked at, and
  refuses one larger than `limit` bytes. `O_NONBLOCK`: a FIFO swapped in cannot hang the open.
- `check_unchanged(dir)` looks the walked directory up again by its path: another directory
  there now (device, inode or owner changed: swapped mid-walk) is `NotRead`.
- `read_capped(path, limit)` is all of the above for a small text file (a config, a key file):
  at most `limit` bytes (`CONFIG_LIMIT`, `SECRET_LIMIT`) of UTF-8.
- Nothing here writes, creates, chowns or chmods anything.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

CONFIG_LIMIT = 1 << 20  # a config or a rubric: 1 MB is far more than any real one
SECRET_LIMIT = 64 << 10  # a key or token file: a few hundred bytes in practice
MAX_LINKS = 40  # as the kernel's own limit on symlinks in one lookup

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class Unreadable(Exception):
    """An instance whose config or database cannot be read; the text says why."""


class NotRead(OSError):
    """A file or directory refused: `str()` is "<path>: <reason>", `strerror` the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(reason)
        self.path = str(path)
        self.reason = reason
        self.strerror = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Dir:
    """A directory held open: its descriptor (the caller closes it), its path as walked, its
    `fstat`, and whether every step to it was safe from users other than root (`trusted`)."""

    fd: int
    path: Path
    stat: os.stat_result
    trusted: bool


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _check_owner(parent: os.stat_result, entry: os.stat_result, path: Path | str) -> None:
    if parent.st_uid != 0 and entry.st_uid not in (0, parent.st_uid):
        raise NotRead(path, f"owned by uid {entry.st_uid} inside a directory of uid {parent.st_uid}, not read")


def _safe_step(parent: os.stat_result, entry: os.stat_result) -> bool:
    """Whether no user but root can put something else at this entry: a root directory that
    only root writes to, or root's entry in a sticky one (/tmp)."""
    if parent.st_uid != 0:
        return False
    if not parent.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return True
    return bool(parent.st_mode & stat.S_ISVTX) and entry.st_uid == 0


def open_dir(path: Path) -> Dir:
    """Walk to the directory `path` (see the module contract); `FileNotFoundError` when a
    component is missing, `NotRead` when one is refused."""
    path = Path(path)
    if not path.is_absolute():
        path = Path.cwd() / path
    parts = list(path.parts[1:])
    fd = os.open("/", _DIR_FLAGS)
    here, where, trusted, links = os.fstat(fd), Path("/"), True, 0
    try:
        while parts:
            name = parts.pop(0)
            if name in ("", "."):
                continue
            entry = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(entry.st_mode):
                links += 1
                if entry.st_uid != 0 or here.st_uid != 0:
                    raise NotRead(where / name, "is a symlink, not read")
                if links > MAX_LINKS:
                    raise NotRead(path, "too many symlinks, not read")
                target = Path(os.readlink(name, dir_fd=fd))
                parts[:0] = list(target.parts[1:] if target.is_absolute() else target.parts)
                if target.is_absolute():
                    os.close(fd)
                    fd = -1
                    fd = os.open("/", _DIR_FLAGS)
                    here, where = os.fstat(fd), Path("/")
                continue
            if name != "..":
                _check_owner(here, entry, where / name)
            trusted = trusted and (name == ".." or _safe_step(here, entry))
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)  # ELOOP/ENOTDIR if swapped since the look
            child_stat = os.fstat(child)
            os.close(fd)
            fd = child
            if _identity(child_stat) != _identity(entry):
                raise NotRead(where / name, "changed while being read, not read")
            here, where = child_stat, where.parent if name == ".." else where / name
    except OSError as exc:
        if fd >= 0:
            os.close(fd)
        if exc.errno == errno.ELOOP and not isinstance(exc, NotRead):  # a symlink swapped in
            raise NotRead(path, "is a symlink, not read") from None
        raise
    return Dir(fd, path, here, trusted)


def open_file(directory: Dir, name: str, path: Path | str, limit: int | None) -> tuple[int, os.stat_result]:
    """Open the regular file `name` in `directory` (shown as `path`) read-only; its descriptor
    (the caller closes it) and `fstat`. See the module contract."""
    entry = os.stat(name, dir_fd=directory.fd, follow_symlinks=False)
    if stat.S_ISLNK(entry.st_mode):
        raise NotRead(path, "is a symlink, not read")
    if not stat.S_ISREG(entry.st_mode):
        raise NotRead(path, "is not a regular file, not read")
    _check_owner(directory.stat, entry, path)
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=directory.fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a symlink since the look
            raise NotRead(path, "is a symlink, not read") from None
        raise
    opened = os.fstat(fd)
    if _identity(opened) != _identity(entry) or not stat.S_ISREG(opened.st_mode):
        os.close(fd)
        raise NotRead(path, "changed while being read, not read")
    if limit is not None and opened.st_size > limit:
        os.close(fd)
        raise NotRead(path, f"larger than {limit} bytes, not read")
    return fd, opened


def check_unchanged(directory: Dir) -> None:
    """`NotRead` when `directory.path` is no longer the directory that was walked."""
    try:
        now = os.stat(directory.path)
    except OSError:
        now = None
    if now is None or _identity(now) != _identity(directory.stat) or now.st_uid != directory.stat.st_uid:
        raise NotRead(directory.path, "replaced while being read, not read")


def read_capped(path: Path | str, limit: int) -> str:
    """The text of the small file `path`: a regular file of at most `limit` bytes of UTF-8,
    reached without an untrusted symlink (see the module contract); else an `OSError`
    (`NotRead` or the system's) whose `strerror` says why."""
    path = Path(path)
    directory = open_dir(path.parent)
    try:
        fd, _ = open_file(directory, path.name, path, limit)
        try:
            data = b""
            while len(data) <= limit:  # the size is checked at open; a file growing meanwhile is cut here
                chunk = os.read(fd, limit + 1 - len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
        check_unchanged(directory)
    finally:
        os.close(directory.fd)
    if len(data) > limit:
        raise NotRead(path, f"larger than {limit} bytes, not read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise NotRead(path, "not UTF-8 text, not read") from None
