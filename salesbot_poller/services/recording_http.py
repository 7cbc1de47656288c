"""The HTTP session call recordings are fetched with, and the deadline that cuts a download.

Recording links come from amoCRM notes written by telephony widgets: whoever controls a
widget (or a PBX's redirect) chooses where the poller connects. So this session:
- connects to public addresses only (`is_public`), unless `allow_private` (a PBX on the
  office network). Checked for every connection the session opens, the first one and each
  redirect's: the name's resolved addresses before connecting, then the address the socket
  is actually connected to (so a name re-resolved to a private address between the two, DNS
  rebinding, is caught too). A refusal raises `PrivateAddress`, a `PermanentError`.
- takes nothing from the environment (`trust_env = False`): no ~/.netrc password, no proxy.
  Proxies are not supported for recordings on purpose: through a proxy the connected address
  is the proxy's, and the address check above would mean nothing.

`Deadline(seconds)`, used as a context manager around one download, holds wall-clock
whatever the server's pace: at the deadline a timer thread shuts down every socket this
thread's requests used meanwhile, which wakes a read blocked in the kernel at once. (Checking
the clock between reads does not hold: a read waits for a whole block, or for the read
timeout, and a server sending a byte a second never lets either happen.)
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from types import TracebackType
from typing import Any, ClassVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from salesbot_poller.errors import PermanentError

ALLOW_KEY = "storage.allow_private_recording_hosts"


class PrivateAddress(PermanentError):
    """A recording link leads to a loopback, private, link-local or otherwise non-public address."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(
            f"recording link points at a private address ({host} -> {address}); "
            f"set {ALLOW_KEY} = true if your PBX is on the office network"
        )


def is_public(address: str) -> bool:
    """Whether an IP address (v4 or v6, text) is a public unicast one.

    Not public: loopback, private, shared (100.64/10), link-local (169.254/16 with the cloud
    metadata service, fe80::/10), multicast, unspecified (0.0.0.0, ::), reserved, and any of
    these written as an IPv4-mapped IPv6 address (::ffff:10.0.0.5).
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # a link-local v6 may carry a %zone
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved
    )


class Deadline:
    """One download's wall-clock limit; see the module docstring.

    While open (`with`), every connection this thread's requests use is watched; at
    `seconds` the watched sockets are shut down (a socket registered after that is shut down
    at once) and `expired` turns true. The reader then gets a connection error, which the
    caller reports as the deadline. Leaving the block stops and joins the timer thread.
    """

    _active = threading.local()

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._connections: list[HTTPConnection] = []
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True  # never keeps the process alive
        self._timer.name = "recording-deadline"

    def __enter__(self) -> Deadline:
        Deadline._active.current = self
        self._timer.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        Deadline._active.current = None
        self._timer.cancel()
        self._timer.join()
        with self._lock:
            for sock in self._sockets:
                sock.close()  # the duplicates; a connection closes its own socket
            self._sockets.clear()

    @classmethod
    def current(cls) -> Deadline | None:
        """The deadline open in this thread, if any."""
        found: Deadline | None = getattr(cls._active, "current", None)
        return found

    def watch_socket(self, sock: socket.socket) -> None:
        # A duplicate descriptor of the same connection: the TLS layer takes the original
        # over (detaching it) for its handshake, which a shutdown of the duplicate ends too.
        try:
            watched = sock.dup()
        except OSError:  # out of descriptors: the connection is watched (`watch_connection`)
            return
        with self._lock:
            self._sockets.append(watched)
            if self.expired:
                _shut(watched)

    def watch_connection(self, conn: HTTPConnection) -> None:
        # Its socket is read when the deadline comes: a TLS socket replaces the plain one.
        with self._lock:
            self._connections.append(conn)
            if self.expired and conn.sock is not None:
                _shut(conn.sock)

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets + [c.sock for c in self._connections if c.sock is not None]:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    # The OS-level shutdown, also for a TLS socket (its own `shutdown` tears down the TLS
    # state under the reading thread's feet); the reader then sees the connection end.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _checked_socket(conn: HTTPConnection, allow_private: bool, connect: Any) -> socket.socket:
    """`connect()` (the parent's `_new_conn`), with the address checks and the deadline."""
    host = conn.host.strip("[]")
    if not allow_private:
        try:
            infos = socket.getaddrinfo(host, conn.port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            infos = []  # the parent's connect reports the name error as usual
        for info in infos:
            if not is_public(str(info[4][0])):
                raise PrivateAddress(host, str(info[4][0]))
    sock: socket.socket = connect()
    if not allow_private:
        peer = str(sock.getpeername()[0])
        if not is_public(peer):  # resolved again by the connect: it is this address that counts
            sock.close()
            raise PrivateAddress(host, peer)
    deadline = Deadline.current()
    if deadline is not None:
        deadline.watch_socket(sock)
    return sock


class _HTTPConnection(HTTPConnection):
    allow_private: ClassVar[bool] = False

    def _new_conn(self) -> socket.socket:
        return _checked_socket(self, self.allow_private, super()._new_conn)


class _HTTPSConnection(HTTPSConnection):
    allow_private: ClassVar[bool] = False

    def _new_conn(self) -> socket.socket:
        return _checked_socket(self, self.allow_private, super()._new_conn)


class _AnyHTTPConnection(_HTTPConnection):
    allow_private = True


class _AnyHTTPSConnection(_HTTPSConnection):
    allow_private = True


def _watched(conn: Any) -> Any:
    deadline = Deadline.current()
    if deadline is not None:
        deadline.watch_connection(conn)
    return conn


# A pooled connection is reused without a new socket: the pool registers every connection
# it hands out with the deadline open in the requesting thread.
class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        return _watched(super()._get_conn(timeout))


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        return _watched(super()._get_conn(timeout))


class _AnyHTTPPool(_HTTPPool):
    ConnectionCls = _AnyHTTPConnection


class _AnyHTTPSPool(_HTTPSPool):
    ConnectionCls = _AnyHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        if self._allow_private:
            pools: dict[str, type[HTTPConnectionPool]] = {"http": _AnyHTTPPool, "https": _AnyHTTPSPool}
        else:
            pools = {"http": _HTTPPool, "https": _HTTPSPool}
        self.poolmanager.pool_classes_by_scheme = pools


def recording_session(user_agent: str, *, allow_private: bool = False) -> requests.Session:
    """The session for recording downloads; see the module docstring."""
    session = requests.Session()
    session.trust_env = False  # no ~/.netrc credentials, no proxy variables (see above)
    session.headers["User-Agent"] = user_agent
    adapter = _GuardedAdapter(allow_private)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
