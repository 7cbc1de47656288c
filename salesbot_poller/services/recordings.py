"""Download call recordings from the telephony links amoCRM stores in `params.link`.

Contract of `RecordingDownloader.download(url, stem, note_seconds)`:
- Streams to `<audio_dir>/<stem>.part`, then renames to `<stem>.<ext>`; returns that path.
- Uses its own session (`recording_http.recording_session`: public addresses only, nothing
  from the environment): the amoCRM token is never sent to a telephony host. Redirects are
  followed. Every read has a timeout, and the whole download has a deadline
  (`deadline_seconds`) that holds wall-clock however slowly the server sends
  (`recording_http.Deadline`); missing it -> `TransientError` naming the host.
- A 200 is not trusted: the Content-Type must not be text/HTML/JSON and the first bytes
  must be a known audio header (MP3, OGG, WAV, FLAC, M4A, WebM); then PyAV must open the
  file as audio, which also reads its real duration (logged).
- Not there yet (404 and other HTTP errors, a timeout, an empty body) -> `TransientError`,
  retried on a later cycle. A 200 whose body is not audio (an HTML page such as Sipuni's
  "User is not licensed", a JSON error, an undecodable file) -> `PermanentError`: the link
  exists and answers, and asking again gives the same page. Over the size cap
  (`storage.max_recording_mb`) -> `PermanentError`.
- A recording much longer than its note says (`note_seconds`; more than 1.5x + 60 s) is not
  kept -> `PermanentError` naming both lengths: a link serving hours of audio for a short call
  would be paid for by the minute. `note_seconds` 0 (unknown): no check.
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
from salesbot_poller.services.recording_http import Deadline

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
NOT_AUDIO_TYPES = ("text/", "application/json", "application/xml", "application/xhtml")
# A recording may run past its note's duration (rounding, ringing, a hold tune); far past it,
# the link serves something else, e.g. a whole day's recording.
LONGER_FACTOR = 1.5
LONGER_MARGIN_SECONDS = 60


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


def clock_text(seconds: float) -> str:
    """`0:30`, `12:05`, `2:00:00`."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def too_long(recording_seconds: float | None, note_seconds: int) -> bool:
    """Whether a recording is much longer than its note says (see the module contract)."""
    if not note_seconds or not recording_seconds:
        return False
    return recording_seconds > LONGER_FACTOR * note_seconds + LONGER_MARGIN_SECONDS


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

    def download(self, url: str, stem: str, note_seconds: int) -> Path:
        host = _host(url)
        if not url.startswith(("http://", "https://")):
            raise PermanentError(f"recording link is not an http(s) URL (host {host})")
        self._audio_dir.mkdir(parents=True, exist_ok=True)
        part = self._audio_dir / f"{stem}.part"
        late = f"recording download from {host} took over {self._deadline_seconds:g} s"
        deadline = Deadline(self._deadline_seconds)
        try:
            with deadline, self._session.get(url, stream=True, timeout=self._timeout) as response:
                self._check_response(response, host)
                ext = self._stream(response, part, host, late)
        except (requests.RequestException, OSError) as exc:
            part.unlink(missing_ok=True)
            if deadline.expired:  # the deadline shut the socket: that is the error to report
                raise TransientError(late) from None
            raise TransientError(f"recording download from {host} failed: {type(exc).__name__}") from None
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        try:
            info = probe(part)
        except PermanentError:
            part.unlink(missing_ok=True)
            raise PermanentError(f"recording from {host} has an audio header but is not decodable audio") from None
        if too_long(info.duration, note_seconds):
            part.unlink(missing_ok=True)
            limit = f"more than {LONGER_FACTOR:g}x + {LONGER_MARGIN_SECONDS} s"
            raise PermanentError(
                f"recording from {host} is {clock_text(info.duration or 0)} long but the note says "
                f"{clock_text(note_seconds)} ({limit}): not transcribed"
            )
        final = self._audio_dir / f"{stem}.{ext}"
        os.replace(part, final)
        log.info(
            "recording from %s: %d bytes, %s, %d channel(s), %d Hz",
            host,
            final.stat().st_size,
            clock_text(info.duration or 0),
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

    def _stream(self, response: requests.Response, part: Path, host: str, late: str) -> str:
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
                # Also checked here: with a session that is not a recording session the
                # deadline has no socket to shut, and this is what remains.
                if self._monotonic() - started > self._deadline_seconds:
                    raise TransientError(late)
                out.write(chunk)
        if ext is None:
            raise TransientError(f"recording from {host} is empty or too short to be audio ({len(head)} bytes)")
        return ext
