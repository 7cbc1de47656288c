"""Cut a quote's clip from a call's kept audio (`clip_files`), with PyAV.

Contract of `cut_clip(index, start, end, out_path)`:
- The span [start, end) is clamped to the recording ([0, `index.duration`]); an empty span
  raises `ValueError`.
- Only the chunks covering the span are opened, each is seeked to just before its part and
  decoded from there: the cost is the clip's length, not the call's. Chunks overlap
  (`audio.overlap_seconds`): each second is taken from the chunk that starts last before it,
  so nothing is heard twice.
- A split stereo call's two channels are placed by their time (each chunk's offset and each
  frame's timestamp) and summed; when the sum would clip, the whole clip is scaled down so
  its peak fits (one party's voice keeps its loudness, two at once never wrap around).
- `out_path` gets one mono Opus-in-Ogg file at 16 kHz (Telegram's voice message format) of
  exactly the clamped span; returns its duration in seconds.
- A chunk file missing, undecodable, or covering too little of its part (truncated) raises
  `PermanentError` naming the file; nothing is written then.
"""

from __future__ import annotations

import math
import operator
from array import array
from fractions import Fraction
from pathlib import Path

import av
from av.audio.frame import AudioFrame

from salesbot_poller.errors import PermanentError
from salesbot_poller.services.clip_files import ClipChunk, ClipIndex

RATE = 16000
BITRATE = 24000  # voice at 16 kHz: clear speech, ~75 KB for 25 s
PREROLL = 0.5  # seconds decoded before the part: Opus needs ~80 ms to converge after a seek
MIN_COVERAGE = 0.9  # of a chunk's part (and 100 ms short at least): a truncated or damaged file
FRAME = 960  # samples per encoded frame (60 ms at 16 kHz)


def cut_clip(index: ClipIndex, start: float, end: float, out_path: Path) -> float:
    """Write the clip of [start, end) to `out_path`; see the module contract."""
    start = max(0.0, start)
    end = min(end, index.duration)
    if end <= start:
        raise ValueError(f"the span {start:.1f}-{end:.1f} s is outside the recording ({index.duration:.1f} s)")
    first, count = round(start * RATE), round(end * RATE) - round(start * RATE)
    tracks = [_track(track, first, count) for track in index.tracks]
    mixed = tracks[0] if len(tracks) == 1 else _mix(tracks)
    _encode(mixed, out_path)
    return count / RATE


def _parts(track: list[ClipChunk], first: int, count: int) -> list[tuple[ClipChunk, int, int]]:
    """(chunk, first sample, end sample) of the recording each chunk supplies in the span."""
    parts = []
    for i, chunk in enumerate(track):
        lo = round(chunk.offset * RATE)
        # A chunk supplies up to where the next one starts (the overlap is the next one's).
        hi = round(track[i + 1].offset * RATE) if i + 1 < len(track) else round((chunk.offset + chunk.duration) * RATE)
        lo, hi = max(lo, first), min(hi, first + count)
        if lo < hi:
            parts.append((chunk, lo, hi))
    return parts


def _track(track: list[ClipChunk], first: int, count: int) -> array[int]:
    """The span of one track as mono s16 samples at `RATE` (silence where no chunk has any)."""
    out = array("h", bytes(2 * count))
    for chunk, lo, hi in _parts(track, first, count):
        got = _decode_into(chunk, lo, hi, out, first)
        missing = hi - lo - got
        if missing > (1 - MIN_COVERAGE) * (hi - lo) and missing > RATE // 10:  # a few ms short is rounding
            raise PermanentError(f"{chunk.path.name}: the recording is damaged (too short)")
    return out


def _decode_into(chunk: ClipChunk, lo: int, hi: int, out: array[int], first: int) -> int:
    """Decode samples [lo, hi) of the recording from `chunk` into `out` (which starts at
    sample `first`); how many samples were placed."""
    base = round(chunk.offset * RATE)  # the chunk's first sample in the recording
    placed = 0
    try:
        with av.open(str(chunk.path), "r") as container:
            stream = container.streams.audio[0]
            time_base = stream.time_base or Fraction(1, stream.codec_context.sample_rate or RATE)
            local = max(0.0, (lo - base) / RATE - PREROLL)
            if local > 0:
                container.seek(int(local / time_base), stream=stream, backward=True, any_frame=False)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            position: int | None = None  # recording sample of the next resampled sample
            for decoded in container.decode(stream):
                if position is None:
                    if decoded.pts is None:
                        raise PermanentError(f"{chunk.path.name}: the recording has no timestamps")
                    position = base + round(float(decoded.pts * time_base) * RATE)
                for frame in resampler.resample(decoded):
                    position, placed = _place(frame, position, lo, hi, out, first, placed)
                if position >= hi:
                    break
            else:
                if position is not None:
                    for frame in resampler.resample(None):
                        position, placed = _place(frame, position, lo, hi, out, first, placed)
    except FileNotFoundError:
        raise PermanentError(f"{chunk.path.name}: the file is missing") from None
    except av.FFmpegError as exc:
        raise PermanentError(f"{chunk.path.name}: the recording is damaged ({type(exc).__name__})") from None
    return placed


def _place(
    frame: AudioFrame, position: int, lo: int, hi: int, out: array[int], first: int, placed: int
) -> tuple[int, int]:
    samples = frame.samples
    begin, end = max(position, lo), min(position + samples, hi)
    if begin < end:
        data = array("h", bytes(frame.planes[0])[: samples * 2])
        out[begin - first : end - first] = data[begin - position : end - position]
        placed += end - begin
    return position + samples, placed


def _mix(tracks: list[array[int]]) -> array[int]:
    """The sum of the tracks, scaled down as a whole only if it would clip."""
    summed = list(map(operator.add, *tracks)) if len(tracks) == 2 else [sum(v) for v in zip(*tracks, strict=True)]
    peak = max(map(abs, summed), default=0)
    if peak <= 32767:
        return array("h", summed)
    scale = 32767 / peak
    return array("h", [math.floor(v * scale) for v in summed])


def _encode(samples: array[int], out_path: Path) -> None:
    with av.open(str(out_path), "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=RATE, layout="mono")
        stream.bit_rate = BITRATE
        stream.codec_context.options = {"application": "voip", "frame_duration": "60"}
        data = samples.tobytes()
        for pts in range(0, len(samples), FRAME):
            piece = data[pts * 2 : (pts + FRAME) * 2]
            frame = AudioFrame(format="s16", layout="mono", samples=len(piece) // 2)
            plane = frame.planes[0]
            plane.update(piece + bytes(plane.buffer_size - len(piece)))
            frame.sample_rate = RATE
            frame.time_base = Fraction(1, RATE)
            frame.pts = pts
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
