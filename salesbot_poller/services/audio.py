"""Audio preparation with PyAV (its wheels bundle FFmpeg: no system ffmpeg is needed).

Contract:
- `probe(path)` reads the container header: duration (seconds, None when the header has
  none), channel count, sample rate. A file PyAV cannot open as audio -> `PermanentError`.
- `prepare(source, out_dir, ...)` decodes the recording ONCE, frame by frame, resamples it to
  16 kHz, and encodes upload files: mono Opus in Ogg (or MP3) at a low bitrate. With
  `split_channels` each of the first two channels becomes its own track (telephony stereo:
  one party per channel); otherwise all channels are mixed into one mono track. Each track
  is cut into chunks of at most `chunk_seconds`, consecutive chunks overlapping by
  `overlap_seconds`, so no word is lost at a cut; each chunk knows its offset in the
  recording. Memory stays flat: only one decoded frame and the open encoders are held.
- With `max_seconds`, decoding stops there: only the first `max_seconds` of the recording
  become chunks, and `PreparedAudio.cut` says the recording went on past it.
- The real duration is counted from the decoded samples, not trusted from the header.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal, cast

import av
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import OutputContainer

from salesbot_poller.errors import PermanentError

RATE = 16000  # speech models work at 16 kHz; more only costs upload bytes
BYTES_PER_SAMPLE = 2  # s16
UploadFormat = Literal["ogg", "mp3"]
_ENCODERS: dict[str, tuple[str, str]] = {"ogg": ("ogg", "libopus"), "mp3": ("mp3", "libmp3lame")}


@dataclass(frozen=True)
class AudioInfo:
    duration: float | None
    channels: int
    sample_rate: int


@dataclass(frozen=True)
class Chunk:
    """One upload file: `channel` 0 = left, 1 = right, None = all channels mixed."""

    path: Path
    channel: int | None
    index: int
    offset: float  # seconds from the start of the recording
    duration: float

    @property
    def size(self) -> int:
        return self.path.stat().st_size


@dataclass(frozen=True)
class PreparedAudio:
    duration: float  # decoded, in seconds
    channels: int  # of the original
    tracks: list[list[Chunk]]  # one list per track, chunks in time order
    cut: bool = False  # the recording is longer than `max_seconds`: only its start is here

    @property
    def chunks(self) -> list[Chunk]:
        return [chunk for track in self.tracks for chunk in track]


def probe(path: Path) -> AudioInfo:
    """Header facts of an audio file; `PermanentError` when it is not decodable audio."""
    try:
        with av.open(str(path), "r") as container:
            if not container.streams.audio:
                raise PermanentError(f"{path.name} has no audio stream")
            stream = container.streams.audio[0]
            duration: float | None = None
            if container.duration:
                duration = float(container.duration / av.time_base)
            elif stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            return AudioInfo(duration, stream.codec_context.channels, stream.codec_context.sample_rate)
    except av.FFmpegError as exc:
        raise PermanentError(f"{path.name} is not decodable audio ({type(exc).__name__})") from None


def channels_identical(path: Path, seconds: float = 60.0, tolerance: float = 0.05) -> bool:
    """True when the first two channels carry the same audio (a mono call saved as stereo,
    which some PBXs do): their difference over the first `seconds` is under `tolerance` of
    their level. Splitting such a file would transcribe every word twice, as both parties."""
    rate = 8000  # enough to compare; keeps the pure-Python sums small
    resampler = av.AudioResampler(format="s16p", layout="stereo", rate=rate)
    difference = level = 0
    wanted = int(seconds * rate)
    seen = 0
    try:
        with av.open(str(path), "r") as container:
            for decoded in container.decode(container.streams.audio[0]):
                for frame in resampler.resample(decoded):
                    left, right = (array("h", bytes(p)[: frame.samples * 2]) for p in frame.planes[:2])
                    difference += sum(abs(a - b) for a, b in zip(left, right, strict=True))
                    level += sum(abs(a) + abs(b) for a, b in zip(left, right, strict=True))
                    seen += frame.samples
                if seen >= wanted:
                    break
    except av.FFmpegError as exc:
        raise PermanentError(f"{path.name} could not be decoded ({type(exc).__name__})") from None
    # Silence proves nothing: such a file keeps its channels.
    return level > 0 and difference <= tolerance * level / 2


@dataclass
class _ChunkWriter:
    """An encoder writing one chunk file; fed mono s16 samples at `RATE`."""

    path: Path
    channel: int | None
    index: int
    start: int  # first sample (of the track) in this chunk
    end: int  # one past the last sample it may hold
    fmt: UploadFormat
    bitrate: int
    written: int = 0
    _container: OutputContainer | None = field(default=None, repr=False)

    def open(self) -> None:
        container_format, codec = _ENCODERS[self.fmt]
        container = av.open(str(self.path), "w", format=container_format)
        stream = cast(AudioStream, container.add_stream(codec, rate=RATE, layout="mono"))
        stream.bit_rate = self.bitrate
        if codec == "libopus":
            # Constrained VBR keeps the size close to the bitrate, so the chunk plan holds;
            # "voip" tunes Opus for intelligible speech; 60 ms frames cost less overhead.
            # Complexity 5 encodes ~2x faster than the default 10 with no loss a recogniser hears.
            stream.codec_context.options = {
                "vbr": "constrained",
                "application": "voip",
                "frame_duration": "60",
                "compression_level": "5",
            }
        self._container = container

    def write(self, pcm: bytes) -> None:
        container = self._container
        assert container is not None
        samples = len(pcm) // BYTES_PER_SAMPLE
        frame = AudioFrame(format="s16", layout="mono", samples=samples)
        plane = frame.planes[0]
        plane.update(pcm + bytes(plane.buffer_size - len(pcm)))
        frame.sample_rate = RATE
        frame.time_base = Fraction(1, RATE)
        frame.pts = self.written
        self.written += samples
        stream = container.streams.audio[0]
        for packet in stream.encode(frame):
            container.mux(packet)

    def close(self) -> Chunk:
        container = self._container
        if container is not None:
            stream = container.streams.audio[0]
            for packet in stream.encode(None):
                container.mux(packet)
            container.close()
            self._container = None
        return Chunk(self.path, self.channel, self.index, self.start / RATE, self.written / RATE)

    def abort(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


class _Track:
    """Cuts one track's sample stream into overlapping chunk writers."""

    def __init__(
        self, out_dir: Path, stem: str, channel: int | None, chunk: int, step: int, fmt: UploadFormat, bitrate: int
    ) -> None:
        self.out_dir, self.stem, self.channel = out_dir, stem, channel
        self.chunk, self.step, self.fmt, self.bitrate = chunk, step, fmt, bitrate
        self.position = 0  # samples of this track seen so far
        self.open: list[_ChunkWriter] = []
        self.done: list[Chunk] = []

    def _start(self, index: int) -> _ChunkWriter:
        suffix = "" if self.channel is None else f"-ch{self.channel}"
        start = index * self.step
        writer = _ChunkWriter(
            self.out_dir / f"{self.stem}{suffix}-{index:03d}.{self.fmt}",
            self.channel,
            index,
            start,
            start + self.chunk,
            self.fmt,
            self.bitrate,
        )
        writer.open()
        self.open.append(writer)
        return writer

    def feed(self, pcm: bytes) -> None:
        count = len(pcm) // BYTES_PER_SAMPLE
        begin, end = self.position, self.position + count
        # Open every chunk that starts inside this piece (usually none or one).
        next_index = len(self.done) + len(self.open)
        while next_index * self.step < end:
            self._start(next_index)
            next_index += 1
        for writer in list(self.open):
            lo, hi = max(begin, writer.start), min(end, writer.end)
            if lo < hi:
                writer.write(pcm[(lo - begin) * BYTES_PER_SAMPLE : (hi - begin) * BYTES_PER_SAMPLE])
            if writer.end <= end:
                self.open.remove(writer)
                self.done.append(writer.close())
        self.position = end

    def finish(self) -> list[Chunk]:
        overlap = self.chunk - self.step
        for writer in self.open:
            # A last chunk holding only audio the previous chunk already has would be paid twice.
            adds_audio = writer.index == 0 or self.position > writer.start + overlap
            if writer.written and adds_audio:
                self.done.append(writer.close())
            else:
                writer.abort()
                writer.path.unlink(missing_ok=True)
        self.open = []
        return sorted(self.done, key=lambda c: c.index)

    def abort(self) -> None:
        for writer in self.open:
            writer.abort()


def prepare(
    source: Path,
    out_dir: Path,
    *,
    split_channels: bool,
    chunk_seconds: float,
    overlap_seconds: float = 2.0,
    fmt: UploadFormat = "ogg",
    bitrate: int = 12000,
    max_seconds: float | None = None,
) -> PreparedAudio:
    """Decode `source` once and write the upload chunks into `out_dir`; see the module contract."""
    if chunk_seconds <= overlap_seconds:
        raise ValueError("chunk_seconds must be longer than overlap_seconds")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError("max_seconds must be positive")
    left = None if max_seconds is None else int(max_seconds * RATE)  # samples still wanted
    chunk = int(chunk_seconds * RATE)
    step = chunk - int(overlap_seconds * RATE)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = probe(source)
    split = split_channels and info.channels >= 2
    channels = [0, 1] if split else [None]
    tracks = [_Track(out_dir, source.stem, ch, chunk, step, fmt, bitrate) for ch in channels]
    resampler = av.AudioResampler(format="s16p", layout="stereo" if split else "mono", rate=RATE)
    cut = False
    try:
        with av.open(str(source), "r") as container:
            stream = container.streams.audio[0]
            for decoded in container.decode(stream):
                for frame in resampler.resample(decoded):
                    left = _feed(tracks, frame, left)
                if left == 0:  # the cap is reached: the rest is neither decoded nor paid for
                    cut = True
                    break
            else:
                for frame in resampler.resample(None):
                    left = _feed(tracks, frame, left)
    except av.FFmpegError as exc:
        for track in tracks:
            track.abort()
        raise PermanentError(f"{source.name} could not be decoded ({type(exc).__name__})") from None
    except BaseException:
        for track in tracks:
            track.abort()
        raise
    duration = tracks[0].position / RATE
    return PreparedAudio(duration, info.channels, [track.finish() for track in tracks], cut)


def _feed(tracks: list[_Track], frame: AudioFrame, left: int | None) -> int | None:
    """Feed `frame` to the tracks, no more than `left` samples (None: no cap); what is left."""
    samples = frame.samples if left is None else min(frame.samples, left)
    size = samples * BYTES_PER_SAMPLE
    if size:
        for track, plane in zip(tracks, frame.planes, strict=False):
            track.feed(bytes(plane)[:size])
    return None if left is None else left - samples


def chunk_seconds_for(upload_limit_bytes: int, bitrate: int, model_max_seconds: float | None) -> float:
    """The longest chunk that stays under the upload limit at `bitrate`, and under the
    model's own duration limit. Headroom: 15% for VBR bursts (constrained VBR holds the
    average, not every second) and 16 KiB for container headers."""
    by_size = (upload_limit_bytes * 0.85 - 16 * 1024) * 8 / bitrate
    limit = by_size if model_max_seconds is None else min(by_size, model_max_seconds)
    return math.floor(limit)
