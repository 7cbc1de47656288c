"""Synthetic call recordings: sine tones as MP3 (PyAV, no numpy needed) or WAV (stdlib)."""

from __future__ import annotations

import io
import math
import sys
import wave
from array import array
from fractions import Fraction

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
    layout = "stereo" if stereo else "mono"
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
