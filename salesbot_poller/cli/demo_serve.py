"""`salesbot-poller demo --serve [--dir DIR]`: the sandboxes and the daemon, running until
Ctrl-C, so every command can be tried by hand without an account.

Contract:
- `run_serve(directory, ...)` starts the amoCRM, OpenAI and Telegram sandboxes on 127.0.0.1,
  writes `DIR/config.toml` pointing at them (`demo_parts.demo_toml`: sandbox tokens as its
  secrets, a SQLite database and the audio directory in DIR, a 5 s poll, the bot's commands
  open to `demo_parts.ADMIN_ID` in `COMMAND_CHAT`), and starts the daemon as `salesbot-poller
  --config DIR/config.toml run` in a child process (its log in `DIR/daemon.log`). Once the
  daemon's first cycle is done (it tells us over a notify socket, as it tells systemd), one
  line says where the config is: any command can then be run with it in another terminal.
- DIR (default `./salesbot-demo`) is created; an existing one must be empty or a previous
  `demo --serve` directory (its database is kept; the config is rewritten for the new ports).
- While it runs: the amoCRM sandbox gets a new call every `every` seconds (`add_call`, some
  missed); each line read from `input_fd` that starts with "/" is a message from the admin to
  the bot; `pause` stops the daemon (so `once`, `run` or `backfill` can hold the database's
  lock elsewhere) and `resume` starts it again; every message the bot posts is printed as
  Telegram shows it, after "→ CHAT:". A daemon that stops by itself is reported (resume).
- Ctrl-C (SIGINT), SIGTERM, SIGHUP or the end of the input stops it: the daemon first (SIGTERM,
  then SIGKILL after `DAEMON_STOP_SECONDS`), then the servers; a last line says what stays in
  DIR. Returns 0, or 1 when the daemon did not start, 2 for a DIR it must not write into.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import IO, Any

from salesbot_poller.cli.common import EXIT_CHECK_FAILED, EXIT_CONFIG, EXIT_OK
from salesbot_poller.cli.demo_cycle import AMO_TOKEN, BOT_TOKEN, CHAT_ID, OPENAI_KEY
from salesbot_poller.cli.demo_parts import (
    ADMIN_ID,
    CHAT_TITLES,
    COMMAND_CHAT,
    daemon_environment,
    demo_toml,
    die_with_parent,
    message_lines,
    notify_listener,
    prepare_directory,
    read_lines,
)
from salesbot_poller.sandbox import SandboxAmoCRM, SandboxOpenAI, SandboxTelegram

CALL_EVERY_SECONDS = 8.0
START_TIMEOUT_SECONDS = 60.0
DAEMON_STOP_SECONDS = 15.0  # the daemon's own grace (9 s) and its exit

Out = Callable[[str], None]


class Stop(Exception):
    """A signal, or the daemon gone: leave the session."""


class Session:
    """One `demo --serve` run; see the module contract."""

    def __init__(self, directory: Path, out: Out, every: float) -> None:
        self.directory = directory
        self._out = out
        self.every = every
        self._print_lock = threading.Lock()
        self.stopping = threading.Event()
        self.ready = threading.Event()  # the daemon's first cycle is done
        self.daemon: subprocess.Popen[bytes] | None = None
        self.daemon_gone = threading.Event()  # the first daemon exited
        self.pausing = False  # the daemon is being stopped on request (`pause`)
        self.command: list[str] = []
        self.spawn: dict[str, Any] = {}

    def out(self, line: str = "") -> None:
        with self._print_lock:
            self._out(line)

    def on_notify(self, message: str) -> None:
        if any(line.startswith("STATUS=last cycle") for line in message.splitlines()):
            self.ready.set()

    def start_daemon(self, config: Path, notify_socket: str, log_file: IO[bytes]) -> None:
        """`salesbot-poller --config CONFIG run` (see the module contract)."""
        self.command = [sys.executable, "-m", "salesbot_poller", "--config", str(config), "run"]
        # A process group of its own: Ctrl-C at the terminal reaches us alone, and we stop the
        # daemon before the servers it talks to (were it told too, it might stop first, and
        # its exit would look like a crash).
        self.spawn = {"stdin": subprocess.DEVNULL, "stdout": log_file, "stderr": log_file, "process_group": 0}
        self.spawn["preexec_fn"] = die_with_parent()  # our SIGKILL must not leave it running
        self.spawn["env"] = daemon_environment(notify_socket)
        self._spawn()

    def _spawn(self) -> None:
        self.daemon = subprocess.Popen(self.command, **self.spawn)
        threading.Thread(target=self._watch_daemon, args=(self.daemon,), name="demo-daemon", daemon=True).start()

    def _watch_daemon(self, daemon: subprocess.Popen[bytes]) -> None:
        code = daemon.wait()
        self.daemon_gone.set()
        if not (self.stopping.is_set() or self.pausing or not self.ready.is_set()):
            log = self.directory / "daemon.log"
            self.out(f"the daemon stopped by itself (exit {code}): see {log}; type resume to start it again")

    def running(self) -> bool:
        return self.daemon is not None and self.daemon.poll() is None

    def stop_daemon(self) -> None:
        if self.daemon is None or not self.running():
            return
        self.daemon.terminate()
        try:
            self.daemon.wait(timeout=DAEMON_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.out(f"the daemon did not stop within {DAEMON_STOP_SECONDS:g} s: killed")
            self.daemon.kill()
            self.daemon.wait()

    def pause(self, tg: SandboxTelegram) -> None:
        """`pause` typed: the daemon stops (the servers go on), so `once`, `run` and
        `backfill` can take the database's lock in another terminal."""
        if not self.running():
            self.out("the daemon is not running: resume starts it")
            return
        self.pausing = True
        tg.release()  # its long poll of the bot's updates answers at once: it stops in a second
        self.stop_daemon()
        tg.release(False)
        self.pausing = False
        self.out("the daemon stopped: `once`, `run` and `backfill` may now use the config; resume starts it again")

    def resume(self) -> None:
        if self.running():
            self.out("the daemon is running: pause stops it")
            return
        self._spawn()
        self.out("the daemon is starting again")

    def print_messages(self, tg: SandboxTelegram) -> None:
        """Until stopped: each message the bot posts, as "→ CHAT: text" (see the contract)."""
        seen = 0
        while True:
            entries = tg.wait_sent(seen, timeout=0.2)
            for entry in entries:
                chat = tg.titles.get(str(entry.get("chat_id")), str(entry.get("chat_id")))
                first, *rest = message_lines(entry)
                with self._print_lock:
                    self._out(f"→ {chat}: {first}")
                    for line in rest:
                        self._out(f"    {line}" if line.strip() else "")
                    self._out("")
            seen += len(entries)
            if self.stopping.is_set() and not entries:
                return

    def add_calls(self, amo: SandboxAmoCRM) -> None:
        """Until stopped: a new call in the amoCRM sandbox every `every` seconds."""
        while not self.stopping.wait(self.every):
            params = amo.add_call(int(time.time()))
            duration = int(str(params["duration"]))
            what = f"answered, {duration // 60}:{duration % 60:02d}" if duration else "missed"
            self.out(f"· amoCRM sandbox: a new call ({what}, {params['phone']})")

    def talk(self, tg: SandboxTelegram, fd: int, echo: bool) -> None:
        """Until the end of input `fd`: each "/..." line goes to the bot from the admin."""
        incoming: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=read_lines, args=(fd, incoming.put), name="demo-input", daemon=True).start()
        while True:
            try:
                # A short wait, not a blocking read: a signal delivered to another thread
                # would not interrupt the main thread's read, and Ctrl-C would wait for Enter.
                line = incoming.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                return
            text = line.strip()
            if not text:
                continue
            if echo:
                self.out(f"> {text}")
            if text.startswith("/"):
                tg.say(text, ADMIN_ID, COMMAND_CHAT)
            elif text in ("pause", "resume"):
                self.pause(tg) if text == "pause" else self.resume()
            else:
                self.out("(the bot answers commands only: /help lists them; pause and resume stop, start the daemon)")


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def run_serve(directory: Path, out: Out = print, input_fd: int = 0, every: float = CALL_EVERY_SECONDS) -> int:
    """See the module contract."""
    directory = directory.absolute()
    refused = prepare_directory(directory)
    if refused:
        out(f"demo: {refused}")
        return EXIT_CONFIG
    session = Session(directory, out, every)
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in stops}
    code, reason = EXIT_OK, "end of input"
    try:
        with ExitStack() as stack:
            amo = stack.enter_context(SandboxAmoCRM(AMO_TOKEN, int(time.time())))
            ai = stack.enter_context(SandboxOpenAI(OPENAI_KEY))
            tg = stack.enter_context(SandboxTelegram(BOT_TOKEN, CHAT_ID, CHAT_TITLES))
            config = directory / "config.toml"
            config.write_text(demo_toml(directory, amo, ai, tg))
            config.chmod(0o600)
            notify = stack.enter_context(notify_listener(session.on_notify))
            log_file = stack.enter_context((directory / "daemon.log").open("ab"))
            workers: list[threading.Thread] = []

            def finish() -> None:  # the daemon first: the servers answer it until it is gone
                for sig in stops:
                    signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
                session.stopping.set()
                tg.release()  # the daemon's long poll of the bot's updates returns at once
                session.stop_daemon()
                for worker in workers:
                    worker.join(timeout=2)

            stack.callback(finish)
            out("SalesBot Poller demo: sandbox amoCRM, OpenAI and Telegram servers on 127.0.0.1 and the daemon")
            out(f"(`salesbot-poller run`, its log in {directory / 'daemon.log'}); starting...")
            try:
                session.start_daemon(config, notify, log_file)
                deadline = time.monotonic() + START_TIMEOUT_SECONDS
                while not session.ready.wait(0.1):
                    if session.daemon_gone.is_set() or time.monotonic() > deadline:
                        out(f"demo: the daemon did not start: see {directory / 'daemon.log'}")
                        return EXIT_CHECK_FAILED
                out(f"config written: {config} (try: salesbot-poller --config {config} status)")
                out(f"A new call comes every {every:g} s. Type a bot command and Enter: /help, /stats, /missed,")
                out("/find цен, /call 1; `pause` stops the daemon (for `once` or `backfill` in the other terminal),")
                out("`resume` starts it again; Ctrl-C or Ctrl-D stops everything.")
                out("")
                workers.append(threading.Thread(target=session.print_messages, args=(tg,), name="demo-print"))
                workers.append(threading.Thread(target=session.add_calls, args=(amo,), name="demo-calls"))
                for worker in workers:
                    worker.start()
                session.talk(tg, input_fd, echo=not os.isatty(input_fd))
            except Stop as stop:
                reason = str(stop)
        session.out("")
        session.out(f"demo stopped ({reason}): {len(amo.events)} calls in the sandbox, {len(tg.sent)} bot messages.")
        session.out(f"{directory} keeps the database: `salesbot-poller --config {config} status` still reads it.")
        return code
    except Stop:  # while the servers were starting: nothing else was started yet
        out("demo stopped")
        return EXIT_OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
