"""A fake recording host (Mango Office / Sipuni / UIS style links)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import FakeServer, RecordedRequest, Reply, text_reply

NOT_FOUND_HTML = (
    "<html><head><title>404 Not Found</title></head><body>"
    "<center><h1>404 Not Found</h1></center><hr><center>nginx</center></body></html>"
)


@dataclass
class _Item:
    body: bytes
    content_type: str
    status: int
    chunk_delay: float = 0.0
    truncate_at: int | None = None
    redirect_to: str | None = None
    announced: int | None = None  # a Content-Length to announce instead of the body's
    chunk_size: int = 64 * 1024


class FakeRecordings(FakeServer):
    """Serves files added with `add()`. Contract:

    - A key is a path (`/rec/1.mp3`) or a path with a query (`/api/crm/record?id=1&hash=x`);
      a request matches its exact path+query first, then its path alone.
    - GET/HEAD answer `status`, `Content-Type` and an exact `Content-Length`; the body is
      streamed in 64 KiB chunks (`chunk_delay` seconds between chunks; `truncate_at=N` sends
      N bytes and drops the connection). Unknown paths: 404 text/html (nginx style).
    - `add_drip()`: a hostile host announcing a huge Content-Length and sending its body a few
      bytes per interval (the handler thread ends when the client goes away).
    - No authentication: `authorization_headers_seen()` lists every Authorization header
      that reached this host, so tests can assert the amoCRM token never leaks here.
    """

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, _Item] = {}

    def add(
        self,
        path: str,
        body: bytes,
        content_type: str = "audio/mpeg",
        status: int = 200,
        *,
        chunk_delay: float = 0.0,
        truncate_at: int | None = None,
    ) -> str:
        """Serve `body` at `path`; returns the absolute URL (server must be started)."""
        path = path if path.startswith("/") else "/" + path
        with self.lock:
            self.files[path] = _Item(body, content_type, status, chunk_delay, truncate_at)
        return self.url(path)

    def add_drip(
        self,
        path: str,
        body: bytes,
        *,
        announced_bytes: int,
        bytes_per_interval: int = 1,
        interval_seconds: float = 1.0,
        content_type: str = "audio/mpeg",
    ) -> str:
        """Serve `body` at `path` `bytes_per_interval` bytes every `interval_seconds`, under a
        `Content-Length: announced_bytes` header; returns the absolute URL."""
        path = path if path.startswith("/") else "/" + path
        with self.lock:
            self.files[path] = _Item(
                body,
                content_type,
                200,
                chunk_delay=interval_seconds,
                announced=announced_bytes,
                chunk_size=bytes_per_interval,
            )
        return self.url(path)

    def add_redirect(self, path: str, to_path: str, status: int = 302) -> str:
        """Redirect `path` to `to_path` (a path on this host or an absolute URL)."""
        path = path if path.startswith("/") else "/" + path
        with self.lock:
            self.files[path] = _Item(b"", "text/html", status, redirect_to=to_path)
        return self.url(path)

    def remove(self, path: str) -> None:
        """Stop serving `path` (then 404)."""
        path = path if path.startswith("/") else "/" + path
        with self.lock:
            self.files.pop(path, None)

    def authorization_headers_seen(self) -> list[str]:
        """Authorization header values of all requests received so far."""
        with self.lock:
            return [r.headers["authorization"] for r in self.requests if "authorization" in r.headers]

    def route(self, req: RecordedRequest) -> Reply:
        if req.method not in ("GET", "HEAD"):
            return text_reply("<html><body>405 Not Allowed</body></html>", 405, "text/html")
        with self.lock:
            item = self.files.get(req.target) or self.files.get(req.path)
        if item is None:
            return text_reply(NOT_FOUND_HTML, 404, "text/html")
        if item.redirect_to is not None:
            location = item.redirect_to
            if not location.startswith(("http://", "https://")):
                location = self.url(location)
            return Reply(item.status, b"", {"Location": location})
        headers = {"Content-Type": item.content_type}
        if item.announced is not None:
            headers["Content-Length"] = str(item.announced)
        return Reply(
            item.status,
            item.body,
            headers,
            chunk_size=item.chunk_size,
            chunk_delay=item.chunk_delay,
            truncate_at=item.truncate_at,
        )
