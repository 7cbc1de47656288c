"""The pieces of `demo --serve` (`demo_serve`): the config it writes and the directory it
writes it in, the daemon's environment and the notify socket it reports on, the terminal's
input, and the bot's messages as text.

Contract:
- `demo_toml(directory, amo, ai, tg)`: the config (see `demo_serve`); it starts with `MARKER`.
- `prepare_directory(directory)`: creates it, or accepts an empty one or a previous demo's
  (its config starts with `MARKER`); else returns why not, in one line.
- `daemon_environment(socket)`: this process's environment without SALESBOT_* and systemd's
  variables, with `NOTIFY_SOCKET` set to `socket`.
- `notify_listener(on_message)`: a datagram socket the daemon notifies, as systemd's.
- `read_lines(fd, put)`: each line of `fd`, then None at its end.
- `die_with_parent()`: a `preexec_fn` that has Linux send the child SIGTERM when we die
  (SIGKILL included), so the daemon is never left polling servers that are gone; None elsewhere.
- `message_lines(entry)`: one message of `SandboxTelegram.sent`, as the chat shows it.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from salesbot_poller.cli.demo_cycle import AMO_TOKEN, BOT_TOKEN, CHAT_ID, DEMO_TRACKERS, OPENAI_KEY
from salesbot_poller.sandbox import SandboxAmoCRM, SandboxOpenAI, SandboxTelegram
from salesbot_poller.services.telegram_text import file_lines, keyboard_line, plain_text

ADMIN_ID = 700000001
COMMAND_CHAT = str(ADMIN_ID)  # the admin's private chat with the bot
CHAT_TITLES = {CHAT_ID: "Отдел продаж (демо)", COMMAND_CHAT: "Руководитель (личный чат)"}
INTERVAL_SECONDS = 5
MARKER = "# Written by `salesbot-poller demo --serve`"


def demo_toml(directory: Path, amo: SandboxAmoCRM, ai: SandboxOpenAI, tg: SandboxTelegram) -> str:
    """The config the daemon and the other commands use (see the module contract)."""

    def q(value: object) -> str:  # a TOML basic string
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

    return f"""{MARKER} for its sandbox servers on 127.0.0.1:
# valid while that runs (the ports change each time). The secrets are the sandboxes' own.

[amocrm]
base_url = {q(amo.base_url)}
long_lived_token = {q(AMO_TOKEN)}
timezone = "Europe/Moscow"

[openai]
api_key = {q(OPENAI_KEY)}
base_url = {q(ai.base_url + "/v1")}

[telegram]
bot_token = {q(BOT_TOKEN)}
api_url = {q(tg.base_url)}
chat_id = {q(CHAT_ID)}
command_chats = [{q(COMMAND_CHAT)}]
admins = [{ADMIN_ID}]

[poller]
interval_seconds = {INTERVAL_SECONDS}
initial_lookback_minutes = 60

[storage]
database = {q(f"sqlite:///{directory / 'salesbot.db'}")}
audio_dir = {q(directory / "audio")}
allow_private_recording_hosts = true  # the recordings are served by the amoCRM sandbox on 127.0.0.1
""" + "".join(_tracker_toml(tracker, q) for tracker in DEMO_TRACKERS)


def _tracker_toml(tracker: dict[str, Any], q: Callable[[object], str]) -> str:
    """One `[[trackers]]` table of the demo's (`DEMO_TRACKERS`), as the one-shot demo has them."""
    lines = ["", "[[trackers]]", f"name = {q(tracker['name'])}"]
    lines.append("phrases = [" + ", ".join(q(p) for p in tracker["phrases"]) + "]")
    lines += [f"{key} = {q(value)}" for key, value in tracker.items() if key == "speaker"]
    lines += [f"{key} = {'true' if value else 'false'}" for key, value in tracker.items() if key in ("alert", "expect")]
    return "\n".join(lines) + "\n"


def prepare_directory(directory: Path) -> str | None:
    """Create DIR, or accept an empty one or a previous demo's; else why not (one line)."""
    config = directory / "config.toml"
    if directory.exists() and not directory.is_dir():
        return f"{directory} is not a directory"
    ours = config.is_file() and config.read_text(errors="replace").startswith(MARKER)
    if directory.is_dir() and any(directory.iterdir()) and not ours:
        return f"{directory} is not empty and holds no earlier demo: choose another with --dir"
    directory.mkdir(parents=True, exist_ok=True)
    return None


def daemon_environment(notify_socket: str) -> dict[str, str]:
    """Ours, without the admin's SALESBOT_* settings and systemd's (they must not reach the
    sandboxes, nor the watchdog meant for another process)."""
    dropped = ("SALESBOT_", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    return environ | {"NOTIFY_SOCKET": notify_socket}


@contextmanager
def notify_listener(on_message: Callable[[str], None]) -> Iterator[str]:
    """A datagram socket the daemon notifies (READY=1, STATUS=...), as systemd's; yields its
    path. Each message is handed to `on_message` from a thread of its own."""
    folder = tempfile.mkdtemp(prefix="salesbot-demo-")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            try:
                on_message(sock.recv(4096).decode(errors="replace"))
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=listen, name="demo-notify", daemon=True)
    thread.start()
    try:
        yield path
    finally:
        done.set()
        thread.join(timeout=1)
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)


def message_lines(entry: dict[str, Any]) -> list[str]:
    """One message the bot sent, as the chat shows it (`services.telegram_text`): text without
    markup; a file as [photo: caption] or [document NAME: caption]; its buttons as [labels]."""
    method = entry.get("method")
    if method == "sendMessage":
        lines = plain_text(str(entry.get("text", ""))).splitlines() or [""]
    else:
        kind = "photo" if method == "sendPhoto" else f"document {entry.get('filename', '')}".rstrip()
        lines = file_lines(kind, str(entry.get("caption", "")))
    buttons = keyboard_line(entry.get("reply_markup"))
    return [*lines, buttons] if buttons else lines


def read_lines(fd: int, put: Callable[[str | None], None]) -> None:
    """Each line read from `fd` (UTF-8, bad bytes replaced), then None at its end. Plain
    `os.read`: a thread blocked in `sys.stdin` would hold its lock at the interpreter's exit."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            chunk = b""
        pending += decoder.decode(chunk, final=not chunk)
        *complete, pending = pending.split("\n")
        for line in complete:
            put(line)
        if not chunk:
            if pending:
                put(pending)
            put(None)
            return


PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """See the module contract."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork: the child only calls it
    prctl = libc.prctl

    def set_death_signal() -> None:  # in the child, between fork and exec: nothing but a syscall
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_death_signal
