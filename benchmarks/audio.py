"""Benchmark: download + preparation of a long stereo call recording.

    .venv/bin/python benchmarks/audio.py            # 3 hours, stereo MP3, Opus/Ogg uploads
    .venv/bin/python benchmarks/audio.py --hours 0.5 --format mp3

1. Synthesises a stereo MP3 (8 kHz, like telephony; one party per channel taking turns,
   noise-like "speech" so the encoders cannot cheat on pure tones), streamed to disk.
2. Serves it from a loopback HTTP server.
3. In a fresh child process: `RecordingDownloader.download` + `audio.channels_identical` +
   `audio.prepare` exactly as the daemon runs them (split channels, chunks sized for the
   25 MB limit of whisper-1).
   The child's peak RSS comes from the kernel (`wait4` rusage), wall times from the child.
4. Prints a table: peak RSS, wall times, bytes uploaded per audio minute vs the original.
Targets: peak RSS < 150 MB, <= 0.25 MB uploaded per audio minute.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from fractions import Fraction
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av

ROOT = Path(__file__).resolve().parent.parent
RATE = 8000
MB = 1024 * 1024


def synthesise(path: Path, seconds: float, bitrate: int) -> None:
    """A stereo MP3 of a conversation: the parties take turns (2-9 s) with short pauses."""
    rng = random.Random(5)
    noise = array("h", (int(rng.gauss(0, 0.25) * 32767 * 0.3) for _ in range(RATE * 3)))
    block = 1152 * 8
    total = int(seconds * RATE)
    # Turn plan: (start sample, end sample, channel), built lazily as the writer advances.
    turns: list[tuple[int, int, int]] = []
    cursor, channel = 0, 0
    while cursor < total:
        length = int(rng.uniform(2, 9) * RATE)
        turns.append((cursor, min(total, cursor + length), channel))
        cursor += length + int(rng.uniform(0.2, 1.5) * RATE)
        channel = 1 - channel
    turn_index = 0
    with av.open(str(path), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=RATE, layout="stereo")
        stream.bit_rate = bitrate
        for start in range(0, total, block):
            count = min(block, total - start)
            planes = [array("h", bytes(2 * count)), array("h", bytes(2 * count))]
            while turn_index < len(turns) and turns[turn_index][1] <= start:
                turn_index += 1
            for t_start, t_end, ch in turns[turn_index : turn_index + 3]:
                lo, hi = max(start, t_start), min(start + count, t_end)
                if lo < hi:
                    offset = (lo * 7) % (len(noise) - (hi - lo))
                    planes[ch][lo - start : hi - start] = noise[offset : offset + hi - lo]
            frame = av.AudioFrame(format="s16p", layout="stereo", samples=count)
            for plane, samples in zip(frame.planes, planes, strict=True):
                data = samples.tobytes()
                plane.update(data + bytes(plane.buffer_size - len(data)))
            frame.sample_rate = RATE
            frame.pts = start
            frame.time_base = Fraction(1, RATE)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # no access log in the table
        pass


CHILD = """
import json, sys, time
from pathlib import Path
import requests
from salesbot_poller.services.audio import channels_identical, chunk_seconds_for, prepare
from salesbot_poller.services.recordings import RecordingDownloader
from salesbot_poller.services.speech import UPLOAD_LIMIT_BYTES
url, work, fmt, bitrate = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
if url == "-":
    print(json.dumps({}))
    sys.exit(0)
t0 = time.monotonic()
path = RecordingDownloader(requests.Session(), work / "audio").download(url, "call-1", 0)
t1 = time.monotonic()
split = not channels_identical(path)  # as OpenAITranscriber does before splitting
prepared = prepare(path, work / "upload", split_channels=split,
                   chunk_seconds=chunk_seconds_for(UPLOAD_LIMIT_BYTES, bitrate, None), fmt=fmt, bitrate=bitrate)
t2 = time.monotonic()
print(json.dumps({"download": t1 - t0, "prepare": t2 - t1, "duration": prepared.duration,
                  "sizes": [c.size for c in prepared.chunks], "original": path.stat().st_size}))
"""


def run_child(args: list[str]) -> tuple[dict[str, Any], float, float]:
    """Run the child; its JSON output, its peak RSS in MB and its CPU seconds (from the kernel)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"child failed with exit code {proc.returncode}")
    return json.loads(output), usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--source-kbps", type=int, default=64, help="bitrate of the synthetic original MP3")
    parser.add_argument("--format", choices=["ogg", "mp3"], default="ogg")
    parser.add_argument("--kbps", type=int, default=12, help="upload bitrate per channel (audio.bitrate_kbps)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="salesbot-bench-") as tmp:
        work = Path(tmp)
        (work / "www").mkdir()
        original = work / "www" / "call.mp3"
        started = time.monotonic()
        synthesise(original, args.hours * 3600, args.source_kbps * 1000)
        synth_seconds = time.monotonic() - started
        handler = functools.partial(QuietHandler, directory=str(work / "www"))
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            _, baseline_rss, _ = run_child(["-", str(work), args.format, str(args.kbps * 1000)])
            url = f"http://127.0.0.1:{server.server_address[1]}/call.mp3"
            result, peak_rss, cpu = run_child([url, str(work), args.format, str(args.kbps * 1000)])
        finally:
            server.shutdown()
    minutes = float(result["duration"]) / 60
    sizes: list[int] = result["sizes"]
    uploaded = sum(sizes)
    original_size = int(result["original"])
    source = f"{minutes / 60:.2f} h stereo MP3, 8 kHz, {args.source_kbps} kbps, {original_size / MB:.1f} MB"
    rows = [
        ("recording", source, ""),
        ("synthesis (not measured below)", f"{synth_seconds:.1f} s", ""),
        ("download wall time", f"{float(result['download']):.1f} s", ""),
        ("preparation wall time", f"{float(result['prepare']):.1f} s", ""),
        ("CPU time of the child (user + system)", f"{cpu:.1f} s", ""),
        ("peak RSS, download + preparation", f"{peak_rss:.1f} MB", "< 150 MB"),
        ("  of which imports alone", f"{baseline_rss:.1f} MB", ""),
        ("uploads", f"{len(sizes)} file(s), {args.format}, {args.kbps} kbps/channel, 16 kHz mono", ""),
        ("largest upload", f"{max(sizes) / MB:.2f} MB", "<= 25 MB"),
        ("uploaded total", f"{uploaded / MB:.1f} MB (both channels)", ""),
        ("uploaded per audio minute", f"{uploaded / MB / minutes:.3f} MB", "<= 0.25 MB"),
        ("original per audio minute", f"{original_size / MB / minutes:.3f} MB", ""),
    ]
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    print(f"| {'metric':<{width}} | {'value':<{value_width}} | target     |")
    print(f"|{'-' * (width + 2)}|{'-' * (value_width + 2)}|------------|")
    for name, value, target in rows:
        print(f"| {name:<{width}} | {value:<{value_width}} | {target:<10} |")


if __name__ == "__main__":
    main()
