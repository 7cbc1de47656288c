"""Synthetic call recordings: sine tones as MP3 (PyAV, no numpy needed) or WAV (stdlib), and
`tone_runs`, which tells the tones in an uploaded file apart (for fakes that "hear" audio)."""

from __future__ import annotations

import io
import itertools
import math
import sys
import wave
from array import array
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av

_AMPLITUDE = 0.3 * 32767


def _tone(seconds: float, freq: float, sample_rate: int) -> array[int]:
    """16-bit signed samples of a sine tone."""
    n = max(0, round(seconds * sample_rate))
    step = 2 * math.pi * freq / sample_rate
    # An integer tone repeats every sample_rate/gcd samples: build one period and tile it.
    period = sample_rate // math.gcd(int(freq), sample_rate) if float(freq).is_integer() else n
    cycle = array("h", [int(_AMPLITUDE * math.sin(step * i)) for i in range(min(n, period))])
    reps = -(-n // len(cycle)) if cycle else 0
    return (cycle * reps)[:n]


def _le_bytes(samples: array[int]) -> bytes:
    if sys.byteorder == "big":
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()


def make_mp3(
    seconds: float,
    *,
    freq: float = 440.0,
    stereo: bool = False,
    right_freq: float = 660.0,
    sample_rate: int = 8000,
    bitrate: int = 32000,
) -> bytes:
    """An MP3 file (libmp3lame) of a `freq` Hz tone; `stereo` puts `right_freq` on the right
    channel, like a two-party telephony recording."""
    channels = [_tone(seconds, freq, sample_rate)]
    if stereo:
        channels.append(_tone(seconds, right_freq, sample_rate))
    return _encode_mp3(channels, sample_rate, bitrate)


def make_wav(
    seconds: float,
    *,
    freq: float = 440.0,
    stereo: bool = False,
    right_freq: float = 660.0,
    sample_rate: int = 8000,
) -> bytes:
    """A 16-bit PCM WAV file of the same tones as `make_mp3`."""
    left = _tone(seconds, freq, sample_rate)
    if stereo:
        right = _tone(seconds, right_freq, sample_rate)
        frames = array("h", bytes(4 * len(left)))
        frames[0::2] = left
        frames[1::2] = right
    else:
        frames = left
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2 if stereo else 1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(_le_bytes(frames))
    return buf.getvalue()


def make_silence_flac(seconds: float, *, sample_rate: int = 8000) -> bytes:
    """A mono FLAC of digital silence: hours of audio in a few MB, written in seconds (FLAC
    packs silence to almost nothing), for recordings far longer than any call should be."""
    buf = io.BytesIO()
    minute = sample_rate * 60
    with av.open(buf, "w", format="flac") as container:
        stream = container.add_stream("flac", rate=sample_rate, layout="mono")
        total = round(seconds * sample_rate)
        for start in range(0, total, minute):
            count = min(minute, total - start)
            frame = av.AudioFrame(format="s16", layout="mono", samples=count)
            plane = frame.planes[0]
            plane.update(bytes(plane.buffer_size))
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


Span = tuple[float, float, float]  # (start s, end s, tone Hz)


def _spans_track(seconds: float, spans: list[Span], sample_rate: int) -> array[int]:
    """Silence with a tone in each span: one party's channel of a conversation."""
    track = array("h", bytes(2 * round(seconds * sample_rate)))
    for start, end, freq in spans:
        first = round(start * sample_rate)
        tone = _tone(end - start, freq, sample_rate)
        track[first : first + len(tone)] = tone[: len(track) - first]
    return track


def make_turns_mp3(
    seconds: float,
    left: list[Span],
    right: list[Span] | None = None,
    *,
    sample_rate: int = 8000,
    bitrate: int = 32000,
) -> bytes:
    """An MP3 where each party speaks (a tone) only in its spans; stereo when `right` is
    given (one party per channel, like a telephony recording), else mono."""
    channels = [_spans_track(seconds, left, sample_rate)]
    if right is not None:
        channels.append(_spans_track(seconds, right, sample_rate))
    return _encode_mp3(channels, sample_rate, bitrate)


def _encode_mp3(channels: list[array[int]], sample_rate: int, bitrate: int) -> bytes:
    layout = "stereo" if len(channels) == 2 else "mono"
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=sample_rate, layout=layout)
        stream.bit_rate = bitrate
        block = 1152 * 8
        total = len(channels[0])
        for start in range(0, total, block):
            count = min(block, total - start)
            frame = av.AudioFrame(format="s16p", layout=layout, samples=count)
            for plane, samples in zip(frame.planes, channels, strict=True):
                data = _le_bytes(samples[start : start + count])
                plane.update(data + bytes(plane.buffer_size - len(data)))
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def decode_mono(data: bytes, rate: int = 8000) -> array[int]:
    """Any audio file's samples, mixed to mono s16 at `rate` (what a recogniser would hear)."""
    samples = array("h")
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    with av.open(io.BytesIO(data), "r") as container:
        for decoded in container.decode(container.streams.audio[0]):
            for frame in resampler.resample(decoded):
                samples.frombytes(bytes(frame.planes[0])[: frame.samples * 2])
        for frame in resampler.resample(None):
            samples.frombytes(bytes(frame.planes[0])[: frame.samples * 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def tone_runs(data: bytes, window: float = 0.1, rate: int = 8000) -> list[Span]:
    """Where the audio is loud, as (start, end, Hz) runs of one tone each.

    The frequency of a window is estimated from its zero crossings; a run ends at silence or
    when the frequency changes by more than 15%. Good enough to tell synthetic tones apart
    after lossy encoding, which is all the fakes need."""
    samples = decode_mono(data, rate)
    size = max(1, round(window * rate))
    runs: list[list[float]] = []  # [start, end, sum of Hz, windows]
    for index in range(0, len(samples) - size + 1, size):
        part = samples[index : index + size]
        loud = math.sqrt(sum(v * v for v in part) / size) > 0.05 * 32767
        if not loud:
            continue
        crossings = sum(1 for a, b in itertools.pairwise(part) if (a < 0) != (b < 0))
        freq = crossings / 2 / window
        start = index / rate
        if runs and abs(runs[-1][1] - start) < 1e-6 and abs(runs[-1][2] / runs[-1][3] - freq) < 0.15 * freq:
            runs[-1][1] = start + window
            runs[-1][2] += freq
            runs[-1][3] += 1
        else:
            runs.append([start, start + window, freq, 1])
    return [(round(s, 2), round(e, 2), r / n) for s, e, r, n in runs]


MARK_SECONDS = 0.2  # each marker burst


def write_marked_wav(
    path: Path, seconds: float, left: Sequence[float], right: Sequence[float], *, sample_rate: int = 8000
) -> None:
    """A stereo WAV of silence with a 0.2 s tone burst at each of `left`'s times on the left
    channel (1 kHz) and of `right`'s on the right (1.5 kHz): a call whose every marker's
    second is known. Written a minute at a time, so hours of it take no memory."""
    burst = {ch: _tone(MARK_SECONDS, freq, sample_rate) for ch, freq in ((0, 1000.0), (1, 1500.0))}
    starts = {0: [round(t * sample_rate) for t in left], 1: [round(t * sample_rate) for t in right]}
    total = round(seconds * sample_rate)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        block = 60 * sample_rate
        for first in range(0, total, block):
            count = min(block, total - first)
            frames = array("h", bytes(4 * count))
            for ch in (0, 1):
                for start in starts[ch]:
                    for i in range(max(start, first), min(start + len(burst[ch]), first + count)):
                        frames[2 * (i - first) + ch] = burst[ch][i - start]
            w.writeframes(_le_bytes(frames))


def loud_onsets(data: bytes, threshold: int = 3000, gap: float = 0.5) -> tuple[float, list[float]]:
    """(decoded duration, the times where sound starts after at least `gap` s of quiet), at
    10 ms resolution: where `write_marked_wav`'s bursts are heard in an encoded file."""
    samples = array("h")
    with av.open(io.BytesIO(data), "r") as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        for decoded in container.decode(container.streams.audio[0]):
            for frame in resampler.resample(decoded):
                samples.extend(array("h", bytes(frame.planes[0])[: frame.samples * 2]))
        for frame in resampler.resample(None):
            samples.extend(array("h", bytes(frame.planes[0])[: frame.samples * 2]))
    onsets: list[float] = []
    last_loud = -gap
    for i in range(0, len(samples), 160):
        if max(map(abs, samples[i : i + 160])) > threshold:
            at = i / 16000
            if at - last_loud >= gap:
                onsets.append(round(at, 2))
            last_loud = at
    return len(samples) / 16000, onsets
