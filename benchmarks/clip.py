"""A quote button pressed on a 3-hour stereo call: the time from calling `send_clip` to the
clip's sendVoice request arriving at the loopback Telegram (target: 1.5 s on this 2-core
machine), for quotes near the start, in the middle and near the end.

Run from the repository root:  .venv/bin/python benchmarks/clip.py [--repeat N] [--chunk-seconds S]

The call (3 h, stereo, 8 kHz, a tone marker now and then on each channel) is prepared once
through the real `audio.prepare` as the transcriber prepares it (16 kHz mono Opus per
channel, 12 kbps, whisper-1's chunk plan: one chunk per channel; `--chunk-seconds 1380` is
gpt-4o's plan) and cached in `.cache/bench-clip-<chunk>/` (preparing takes minutes; delete
the folder to prepare again). Each press is a first press (no stored file id): the clip is
cut from the kept Opus (only the part it needs is decoded), mixed, encoded and uploaded
with the real notifier (telebot) to the fake Bot API. The App is tests/builder.py's.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salesbot_poller.pipeline.clips import send_clip
from salesbot_poller.services import clip_files
from salesbot_poller.services.audio import chunk_seconds_for, prepare
from salesbot_poller.services.speech import UPLOAD_LIMIT_BYTES
from salesbot_poller.store import Clip
from tests.builder import build_rig
from tests.fakes import FakeTelegram
from tests.fakes.audio import write_marked_wav

HOURS = 3
SECONDS = HOURS * 3600.0
TOKEN = "123456:BENCH-token"
CHAT = "-1001234567890"
ROOT = Path(__file__).resolve().parent.parent
POSITIONS = {"start": 2.0, "1 min": 60.0, "middle": SECONDS / 2, "2:59:50": SECONDS - 10, "end": SECONDS - 1}


def prepared(chunk_seconds: float) -> Path:
    """The kept clip audio of the 3-hour call (cached across runs)."""
    cache = ROOT / ".cache" / f"bench-clip-{int(chunk_seconds)}"
    if (cache / "clip-1" / clip_files.INDEX).exists():
        return cache / "clip-1"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    marks = [m * 600.0 + 3 for m in range(HOURS * 6)]
    print(f"preparing a {HOURS} h stereo call once (cached in {cache.relative_to(ROOT)}) ...", flush=True)
    started = time.monotonic()
    write_marked_wav(cache / "call-1.wav", SECONDS, marks, [m + 2 for m in marks])
    chunks = prepare(cache / "call-1.wav", cache / "work", split_channels=True, chunk_seconds=chunk_seconds)
    clip_files.keep(chunks, cache / "clip-1")
    (cache / "call-1.wav").unlink()
    print(f"prepared in {time.monotonic() - started:.0f} s: {len(chunks.chunks)} chunk(s)", flush=True)
    return cache / "clip-1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="presses per position")
    parser.add_argument(
        "--chunk-seconds", type=float, default=chunk_seconds_for(UPLOAD_LIMIT_BYTES, 12000, None), help="chunk plan"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    source = prepared(args.chunk_seconds)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, FakeTelegram(token=TOKEN) as telegram:
        telegram.known_chats = {CHAT}
        telegram_section = {"bot_token": TOKEN, "chat_id": CHAT, "api_url": telegram.base_url}
        rig = build_rig(Path(tmp), real_notifier=True, telegram=telegram_section)
        app = rig.app
        audio_dir = Path(app.config.storage.audio_dir)
        shutil.copytree(source, audio_dir / "clip-1")  # call 1's kept audio; no call row is needed to cut
        from salesbot_poller.store import Call

        Call.insert(
            id=1, event_id="bench", direction="in", entity_type="leads", entity_id=1, note_id=1,
            event_created_at=0, first_seen_at=0, updated_at=0, stage="notified", manager_name="Иван Петров",
        ).execute()  # fmt: skip
        send_clip(app, 1, 100.0, "разогрев", CHAT, None, int(time.time()))  # imports, first connection
        for name, second in POSITIONS.items():
            times = []
            for _ in range(args.repeat):
                Clip.delete().execute()  # every press a first one: cut and uploaded
                before = len(telegram.clips)
                started = time.monotonic()
                answer = send_clip(app, 1, second, "Сколько стоит доставка?", CHAT, None, int(time.time()))
                assert answer is None, answer
                clip = telegram.clips[before]
                times.append(clip["arrived"] - started)
            rows.append((name, second, len(clip["bytes"]), times))
    index = clip_files.read_index(source)
    assert index is not None
    print(
        f"\n{HOURS} h stereo call, {len(index.chunks)} chunk(s) of up to {args.chunk_seconds:.0f} s, "
        f"{args.repeat} press(es) per position; time from send_clip to sendVoice arriving"
    )
    print(f"{'quote at':<10} {'second':>8} {'clip KB':>8} {'min s':>7} {'median s':>9} {'max s':>7}")
    for name, second, size, times in rows:
        print(
            f"{name:<10} {second:>8.0f} {size / 1024:>8.0f} {min(times):>7.3f} "
            f"{statistics.median(times):>9.3f} {max(times):>7.3f}"
        )
    worst = max(max(t) for *_, t in rows)
    print(f"\nworst {worst:.3f} s: {'within' if worst <= 1.5 else 'OVER'} the 1.5 s target")


if __name__ == "__main__":
    main()
