"""Shared machinery for the loopback fake servers.

`FakeServer` runs a `ThreadingHTTPServer` on 127.0.0.1 (random port) in a daemon thread,
records every request, and can inject canned failures or delays. Subclasses implement
`route(req) -> Reply`; everything about HTTP framing (HTTP/1.1 keep-alive, Content-Length,
HEAD, 204 without a body, chunked request bodies) is handled here.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import json
import re
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import parse_qs, urlsplit

JSON = dict[str, Any]


@dataclass
class RecordedRequest:
    """One request as the fake received it (the body fully read)."""

    method: str
    path: str  # without the query string, not percent-decoded
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    at: float  # time.monotonic() when the request line and headers had arrived
    target: str = ""  # the raw request target (path?query), as on the request line

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    def param(self, name: str, default: str | None = None) -> str | None:
        """First query-string value of `name`."""
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class Reply:
    """What a fake answers. `chunk_delay`/`truncate_at` shape how the body is streamed:
    `truncate_at=N` announces the full Content-Length, sends N bytes and drops the connection.
    """

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunk_size: int = 64 * 1024
    chunk_delay: float = 0.0
    truncate_at: int | None = None


@dataclass
class UploadedFile:
    """A file part of a multipart/form-data body."""

    filename: str | None
    content_type: str
    data: bytes


def json_reply(obj: Any, status: int = 200, content_type: str = "application/json") -> Reply:
    """A JSON answer (UTF-8, non-ASCII kept as is, like the real services)."""
    try:
        body = json.dumps(obj, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate: written as a \ud800 escape, as servers do
        body = json.dumps(obj).encode()
    return Reply(status, body, {"Content-Type": content_type})


def text_reply(text: str, status: int = 200, content_type: str = "text/plain") -> Reply:
    """A text answer with `charset=utf-8`."""
    return Reply(status, text.encode(), {"Content-Type": f"{content_type}; charset=utf-8"})


def canned_reply(status: int, body: bytes | str | JSON | list[Any], headers: dict[str, str] | None) -> Reply:
    """Build the Reply for `fail_next`: dict/list -> JSON, str -> text/html, bytes as is."""
    if isinstance(body, dict | list):
        reply = json_reply(body, status)
    elif isinstance(body, str):
        reply = text_reply(body, status, "text/html")
    else:
        reply = Reply(status, body)
    for name, value in (headers or {}).items():
        reply.headers = {k: v for k, v in reply.headers.items() if k.lower() != name.lower()}
        reply.headers[name] = value
    return reply


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, UploadedFile]]:
    """Split a multipart/form-data body into (text fields, file fields).

    A part with a filename (RFC 2231 `filename*=` included) is a file; the others are text.
    """
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields: dict[str, str] = {}
    files: dict[str, UploadedFile] = {}
    if not msg.is_multipart():
        return fields, files
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            ctype = part.get("content-type", "application/octet-stream")
            files[name] = UploadedFile(filename, str(ctype), data)
        else:
            fields[name] = data.decode(part.get_content_charset() or "utf-8", "replace")
    return fields, files


def form_params(req: RecordedRequest) -> tuple[dict[str, str], dict[str, UploadedFile]]:
    """Parameters from the query string and the body (urlencoded, multipart or JSON object),
    the body winning on a clash. Only the first value of a repeated key is kept."""
    params = {k: v[0] for k, v in req.query.items()}
    files: dict[str, UploadedFile] = {}
    ctype = req.headers.get("content-type", "")
    if not req.body:
        return params, files
    if ctype.startswith("multipart/form-data"):
        fields, files = parse_multipart(ctype, req.body)
        params.update(fields)
    elif ctype.startswith("application/json"):
        data = json.loads(req.body)
        if isinstance(data, dict):
            for k, v in data.items():
                params[k] = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    else:  # application/x-www-form-urlencoded, or a client that forgot the header
        body = parse_qs(req.body.decode("utf-8", "replace"), keep_blank_values=True)
        params.update({k: v[0] for k, v in body.items()})
    return params, files


@dataclass
class _Rule:
    pattern: re.Pattern[str]
    method: str | None
    times: int
    reply: Reply | None = None
    delay: float = 0.0

    def matches(self, req: RecordedRequest) -> bool:
        return (
            self.times > 0
            and (self.method is None or self.method.upper() == req.method)
            and self.pattern.search(req.path) is not None
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def setup(self) -> None:
        super().setup()
        self._fake()._connections.add(self.connection)

    def finish(self) -> None:
        self._fake()._connections.discard(self.connection)
        super().finish()

    def _fake(self) -> FakeServer:
        return cast(_Server, self.server).fake

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        at = time.monotonic()
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        split = urlsplit(self.path)
        req = RecordedRequest(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=headers,
            body=self._read_body(),
            at=at,
            target=self.path,
        )
        fake = self._fake()
        try:
            reply = fake._dispatch(req)
        except Exception:
            fake.errors.append(traceback.format_exc())
            reply = text_reply(f"fake server error\n{traceback.format_exc()}", 500)
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        names = {k.lower() for k in reply.headers}
        for name, value in reply.headers.items():
            self.send_header(name, value)
        no_body = reply.status in (204, 304) or 100 <= reply.status < 200
        if not no_body and "content-length" not in names:
            self.send_header("Content-Length", str(len(reply.body)))
        if "connection" in names and reply.headers.get("Connection", "").lower() == "close":
            self.close_connection = True
        self.end_headers()
        if no_body or self.command == "HEAD":
            return
        body = reply.body
        if reply.truncate_at is not None:
            body = body[: reply.truncate_at]
        for start in range(0, len(body), reply.chunk_size):
            if start and reply.chunk_delay:
                time.sleep(reply.chunk_delay)
            self.wfile.write(body[start : start + reply.chunk_size])
            self.wfile.flush()
        if reply.truncate_at is not None:
            self.close_connection = True

    do_GET = do_POST = do_HEAD = do_PUT = do_PATCH = do_DELETE = _handle


class FakeServer:
    """Base of the fakes. Contract:

    - `start()` binds 127.0.0.1 on a random port and serves in a daemon thread; `stop()` shuts
      the server and every open keep-alive connection down. Also a context manager.
    - Every request is appended to `requests` (under `lock`) BEFORE it is answered.
    - `fail_next` / `delay_next` rules are consumed in the order they were added; a canned
      failure replaces the normal answer completely (no auth check, no state change).
    - An exception in a subclass's `route` answers 500 and is kept in `errors`.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []
        self._rules: list[_Rule] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # lifecycle -----------------------------------------------------------------------------
    def start(self) -> Self:
        """Start serving (idempotent) and return self."""
        if self._server is None:
            server = _Server(("127.0.0.1", 0), _Handler)
            server.fake = self
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.01},  # stop() waits up to this long: short keeps teardown quick
                daemon=True,
                name=f"{type(self).__name__}-{server.server_address[1]}",
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close open client connections (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        for conn in list(self._connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT` (no trailing slash). Only while started."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        """Absolute URL of `path` on this server."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    # inspection ----------------------------------------------------------------------------
    def requests_to(self, path_regex: str = ".*", method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests whose path matches `path_regex` (re.search) and method."""
        pattern = re.compile(path_regex)
        with self.lock:
            return [
                r for r in self.requests if pattern.search(r.path) and (method is None or r.method == method.upper())
            ]

    def count(self, path_regex: str = ".*", method: str | None = None) -> int:
        """How many recorded requests match (see `requests_to`)."""
        return len(self.requests_to(path_regex, method))

    # fault injection -----------------------------------------------------------------------
    def fail_next(
        self,
        path_regex: str,
        status: int,
        body: bytes | str | JSON | list[Any] = b"",
        headers: dict[str, str] | None = None,
        times: int = 1,
        method: str | None = None,
    ) -> None:
        """Answer the next `times` requests whose path matches (re.search) with this response
        instead of the normal one. dict/list body -> JSON, str -> text/html."""
        reply = canned_reply(status, body, headers)
        with self.lock:
            self._rules.append(_Rule(re.compile(path_regex), method, times, reply=reply))

    def delay_next(self, path_regex: str, seconds: float, times: int = 1, method: str | None = None) -> None:
        """Sleep `seconds` before answering the next `times` matching requests."""
        with self.lock:
            self._rules.append(_Rule(re.compile(path_regex), method, times, delay=seconds))

    def clear_faults(self) -> None:
        """Forget every pending fail_next/delay_next rule."""
        with self.lock:
            self._rules.clear()

    # dispatch ------------------------------------------------------------------------------
    def _dispatch(self, req: RecordedRequest) -> Reply:
        delay = 0.0
        canned: Reply | None = None
        with self.lock:
            self.requests.append(req)
            early = self.on_request(req)
            if early is not None:
                return early
            for rule in self._rules:
                if rule.reply is None and rule.delay and rule.matches(req):
                    rule.times -= 1
                    delay = rule.delay
                    break
            for rule in self._rules:
                if rule.reply is not None and rule.matches(req):
                    rule.times -= 1
                    canned = rule.reply
                    break
        if delay:
            time.sleep(delay)
        if canned is not None:
            return canned
        return self.route(req)

    def on_request(self, req: RecordedRequest) -> Reply | None:
        """Hook called under `lock` right after a request is recorded; a Reply returned here
        is sent at once (before fault rules and `route`)."""
        return None

    def route(self, req: RecordedRequest) -> Reply:
        """Answer a request; subclasses override."""
        return text_reply("not found", 404)
