"""Reading a file the configuration names: a regular file only, and never more than a cap.

Contract:
- `read_text(path, limit)` is the UTF-8 text of the regular file at `path` when it holds at
  most `limit` bytes, with its newlines made "\\n" as `Path.read_text` makes them. Every file
  the configuration names is read through it: the config file itself, `<key>_file` keys and
  `SALESBOT_<SECTION>_<KEY>_FILE` variables, systemd credentials, prompt and rubric files.
- A FIFO, a device (`/dev/zero`), a directory or a socket is refused without a byte read: the
  path is stat'ed first (a device is not even opened: opening some has side effects), then
  opened with O_NONBLOCK (a FIFO swapped in meanwhile cannot hang the open) and checked again
  with fstat on what was opened. At most `limit` + 1 bytes are read, never the whole file
  (a /proc file that says it is empty included).
- A refusal is `FileRejected` (a ValueError, so inside a pydantic validator it is reported
  under its key), worded for the admin: "/x/p.txt is 4.4 MB, the limit is 64 KB",
  "/dev/zero is not a regular file (a character device)", "/x is not UTF-8 text". The OS's
  own errors (no such file, permission denied) propagate as `OSError`: each caller words them.
- `FILE_LIMIT` (1 MB) is for the config file, secrets and any `<key>_file`; `PROMPT_LIMIT`
  (64 KB) for what is sent with every request: prompt files, rubric files (their items are
  listed in the system prompt) and a `<key>_file` of a prompt key (`openai.vocabulary_prompt`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

KB = 1024
MB = 1024 * KB
FILE_LIMIT = 1 * MB
PROMPT_LIMIT = 64 * KB

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class FileRejected(ValueError):
    """A file the config names that is not read: not a regular file, too big, not UTF-8."""


def size_text(size: int) -> str:
    """`size` bytes for a message: "4.4 MB", "70 KB", "512 bytes"."""
    if size >= MB:
        value, unit = size / MB, "MB"
    elif size >= KB:
        value, unit = size / KB, "KB"
    else:
        return f"{size} bytes"
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"


def limit_for(key: str) -> int:
    """The cap of a `<key>_file`: `PROMPT_LIMIT` for a prompt (sent with every request)."""
    return PROMPT_LIMIT if "prompt" in key else FILE_LIMIT


def _regular(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "of an unknown kind")
        raise FileRejected(f"{path} is not a regular file ({kind})")


def _too_big(path: Path, size: int, limit: int) -> FileRejected:
    said = size_text(size)
    if said == size_text(limit):  # 64.01 KB would read "is 64 KB, the limit is 64 KB"
        said = f"over {said}"
    return FileRejected(f"{path} is {said}, the limit is {size_text(limit)}")


def read_text(path: str | Path, limit: int) -> str:
    """See the module contract."""
    path = Path(path)
    _regular(path, os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        _regular(path, info.st_mode)  # swapped for a FIFO or a device since the stat
        if info.st_size > limit:
            raise _too_big(path, info.st_size, limit)
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 64 * KB))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:  # it grew since the fstat, or says a size it does not have (/proc)
        raise _too_big(path, max(info.st_size, len(data)), limit)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise FileRejected(f"{path} is not UTF-8 text") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")
