"""systemd's notify protocol (`Type=notify`, `WatchdogSec=`), in the standard library.

Contract:
- `SystemdNotifier.from_environ(environ)` reads `$NOTIFY_SOCKET` (a path, or an abstract
  socket written with a leading `@`) and `$WATCHDOG_USEC` / `$WATCHDOG_PID`. Without
  `NOTIFY_SOCKET` (not started by systemd, or `Type=simple`) every method is a no-op.
- `notify("READY=1", ...)` sends one datagram of newline-separated assignments and returns
  whether it was sent. It never raises: the poller keeps working if systemd cannot be told;
  the first failure is logged as a warning, later ones at debug level. It never waits more
  than `SEND_TIMEOUT` for a listener whose queue is full: the daemon must still stop.
- `extending_start(every, by)`: a context manager that, while its block runs (a long start:
  the database's migrations), tells systemd every `every` seconds to wait `by` seconds more
  (`EXTEND_TIMEOUT_USEC`), so `TimeoutStartSec` does not kill a start that is working (and
  roll its migration back, start after start). A no-op without `NOTIFY_SOCKET`.
- `watchdog_seconds` is the interval systemd expects pings within (None without a watchdog
  for this process); ping at least twice per interval.

Why not the `sdnotify` package: it swallows every error silently, and the protocol is a
single `sendto`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

log = logging.getLogger(__name__)

# A datagram socket's queue holds a few messages (net.unix.max_dgram_qlen, 10 by default);
# once it is full, sendto waits until the listener reads. systemd reads at once, so waiting
# longer than this means it is stuck, and the daemon (which notifies under a lock, and once
# more as it stops) would be stuck with it.
SEND_TIMEOUT = 1.0


class SystemdNotifier:
    """Sends state changes to systemd's notify socket, if there is one."""

    def __init__(self, address: str | None, watchdog_seconds: float | None = None) -> None:
        self.address = address
        self.watchdog_seconds = watchdog_seconds
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> SystemdNotifier:
        address = environ.get("NOTIFY_SOCKET") or None
        watchdog: float | None = None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process the watchdog is meant for: not ours -> no watchdog.
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(usec) / 1_000_000
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send `assignments` (e.g. "READY=1", "STATUS=...") as one datagram."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(SEND_TIMEOUT)
                sock.sendto(message, target)
        except OSError as exc:
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(level, "cannot notify systemd at %s: %s", self.address, exc.strerror or exc)
            return False
        return True

    @contextmanager
    def extending_start(self, every: float = 30.0, by: float = 90.0) -> Iterator[None]:
        """See the module contract."""
        if self.address is None:
            yield
            return
        done = threading.Event()

        def extend() -> None:
            while not done.wait(every):
                self.notify(f"EXTEND_TIMEOUT_USEC={int(by * 1_000_000)}", "STATUS=migrating the database")

        thread = threading.Thread(target=extend, name="start-extender", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
