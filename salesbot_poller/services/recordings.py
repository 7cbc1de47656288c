"""Download call recordings from the telephony links amoCRM stores in `params.link`.

Contract of `RecordingDownloader.download(url, stem)`:
- Streams to `<audio_dir>/<stem>.part`, then renames to `<stem>.<ext>`; returns that path.
- Uses its own session: the amoCRM token is never sent to a telephony host. Redirects are
  followed. Every read has a timeout, and the whole download has a deadline.
- A 200 is not trusted: the Content-Type must not be text/HTML/JSON and the first bytes
  must be a known audio header (MP3, OGG, WAV, FLAC, M4A, WebM); then PyAV must open the
  file as audio, which also reads its real duration (logged).
- Not there yet (404 and other HTTP errors, a timeout, an empty body) -> `TransientError`,
  retried on a later cycle. A 200 whose body is not audio (an HTML page such as Sipuni's
  "User is not licensed", a JSON error, an undecodable file) -> `PermanentError`: the link
  exists and answers, and asking again gives the same page. Over the size cap
  (`storage.max_recording_mb`) -> `PermanentError`.
- Recording links are often signed: errors and logs name the host only, never the URL.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import requests

from salesbot_poller.errors import PermanentError, TransientError
from salesbot_poller.services.audio import probe

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
NOT_AUDIO_TYPES = ("text/", "application/json", "application/xml", "application/xhtml")


def sniff_audio(head: bytes) -> str | None:
    """The file extension for a known audio header, or None."""
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    return None


def _host(url: str) -> str:
    return urlsplit(url).hostname or "?"


class RecordingDownloader:
    """Implements `domain.RecordingFetcher`."""

    def __init__(
        self,
        session: requests.Session,
        audio_dir: Path,
        *,
        timeout: tuple[float, float] = (10, 60),
        deadline_seconds: float = 600,
        max_bytes: int = 300 * 1024 * 1024,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._audio_dir = audio_dir
        self._timeout = timeout
        self._deadline_seconds = deadline_seconds
        self._max_bytes = max_bytes
        self._monotonic = monotonic

    def download(self, url: str, stem: str) -> Path:
        host = _host(url)
        if not url.startswith(("http://", "https://")):
            raise PermanentError(f"recording link is not an http(s) URL (host {host})")
        self._audio_dir.mkdir(parents=True, exist_ok=True)
        part = self._audio_dir / f"{stem}.part"
        try:
            with self._session.get(url, stream=True, timeout=self._timeout, allow_redirects=True) as response:
                self._check_response(response, host)
                ext = self._stream(response, part, host)
        except requests.RequestException as exc:
            part.unlink(missing_ok=True)
            raise TransientError(f"recording download from {host} failed: {type(exc).__name__}") from None
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        try:
            info = probe(part)
        except PermanentError:
            part.unlink(missing_ok=True)
            raise PermanentError(f"recording from {host} has an audio header but is not decodable audio") from None
        final = self._audio_dir / f"{stem}.{ext}"
        os.replace(part, final)
        minutes, seconds = divmod(round(info.duration or 0), 60)
        log.info(
            "recording from %s: %d bytes, %d:%02d, %d channel(s), %d Hz",
            host,
            final.stat().st_size,
            minutes,
            seconds,
            info.channels,
            info.sample_rate,
        )
        return final

    def _check_response(self, response: requests.Response, host: str) -> None:
        if response.status_code != 200:
            raise TransientError(f"recording not available from {host} yet: HTTP {response.status_code}")
        content_type = response.headers.get("Content-Type", "").lower()
        if content_type.startswith(NOT_AUDIO_TYPES):
            raise PermanentError(
                f"recording link at {host} answered {content_type.split(';')[0]}, not audio "
                "(an error page of the telephony service: check the widget's account)"
            )

    def _stream(self, response: requests.Response, part: Path, host: str) -> str:
        started = self._monotonic()
        size = 0
        ext: str | None = None
        head = b""
        with part.open("wb") as out:
            for received in response.iter_content(chunk_size=CHUNK):
                chunk = received
                if ext is None:
                    # Hold the first bytes back until there are enough to recognise the format.
                    head += received
                    if len(head) < 12:
                        continue
                    ext = sniff_audio(head)
                    if ext is None:
                        raise PermanentError(f"recording from {host} is not audio (starts with {head[:8]!r})")
                    chunk = head
                size += len(chunk)
                if size > self._max_bytes:
                    raise PermanentError(f"recording from {host} is over {self._max_bytes // 2**20} MB")
                if self._monotonic() - started > self._deadline_seconds:
                    raise TransientError(f"recording download from {host} took over {self._deadline_seconds:.0f} s")
                out.write(chunk)
        if ext is None:
            raise TransientError(f"recording from {host} is empty or too short to be audio ({len(head)} bytes)")
        return ext
