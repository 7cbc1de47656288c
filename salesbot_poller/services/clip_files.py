"""The audio kept for quote clips: the prepared upload chunks a call was transcribed from.

Contract:
- A call's clip audio lives in `<audio_dir>/clip-<call id>/`: the chunk files exactly as
  `audio.prepare` wrote them (Opus in Ogg, or MP3: never encoded a second time) and
  `index.json`, which lists each chunk's file, channel (0/1 for a split stereo call, None for
  one mixed track), offset and duration in seconds, and the recording's decoded duration.
- `keep(prepared, directory)` moves the chunks there (replacing what an earlier attempt left)
  and writes the index last, so a directory without a readable index is not a clip.
- The index file's modification time is when the audio was kept: `expired` and
  `delete_expired_clips` count `storage.clip_days` from it, as retention counts recordings'.
- `read_index` returns None for a call with no kept audio; a present but unreadable index
  raises `ValueError`. Chunk paths in the index are names inside the directory, never paths
  elsewhere (a hand-edited index cannot point the reader at other files).
- `delete_clips(audio_dir, call_ids)` (`forget`) and `delete_expired_clips(audio_dir, now,
  clip_days)` (retention) remove whole clip directories and say how many went; a directory
  that cannot be removed is logged once and skipped. They stat one file per kept call.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from salesbot_poller.services.audio import PreparedAudio

log = logging.getLogger(__name__)

DAY = 24 * 3600
INDEX = "index.json"
PREFIX = "clip-"
_NAME = re.compile(r"clip-(\d+)")
_CHUNK_NAME = re.compile(r"[\w.-]+")


@dataclass(frozen=True)
class ClipChunk:
    path: Path
    channel: int | None
    offset: float  # seconds from the start of the recording
    duration: float


@dataclass(frozen=True)
class ClipIndex:
    """A call's kept audio: its chunks in time order per track."""

    directory: Path
    duration: float  # the recording's decoded duration (what was transcribed), seconds
    chunks: tuple[ClipChunk, ...]
    kept_at: float  # when the audio was kept (the index file's modification time)

    @property
    def tracks(self) -> list[list[ClipChunk]]:
        """One list per channel (or the one mixed track), chunks in time order."""
        channels = sorted({c.channel for c in self.chunks}, key=lambda c: -1 if c is None else c)
        return [sorted((c for c in self.chunks if c.channel == ch), key=lambda c: c.offset) for ch in channels]


def clip_dir(audio_dir: Path, call_id: int) -> Path:
    return Path(audio_dir) / f"{PREFIX}{call_id}"


def keep(prepared: PreparedAudio, directory: Path) -> None:
    """Move `prepared`'s chunk files into `directory` and write its index (see the contract)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    entries = []
    for chunk in prepared.chunks:
        target = directory / chunk.path.name
        shutil.move(chunk.path, target)  # a rename on one filesystem: no copy
        entries.append(
            {"file": target.name, "channel": chunk.channel, "offset": chunk.offset, "duration": chunk.duration}
        )
    index = {"version": 1, "duration": prepared.duration, "chunks": entries}
    part = directory / (INDEX + ".part")
    part.write_text(json.dumps(index))
    part.replace(directory / INDEX)


def read_index(directory: Path) -> ClipIndex | None:
    """The index of the clip audio in `directory`; None when there is none (see the contract)."""
    path = directory / INDEX
    try:
        raw = path.read_text()
        kept_at = path.stat().st_mtime
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"{path.name}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
        chunks = []
        for entry in data["chunks"]:
            name = str(entry["file"])
            if _CHUNK_NAME.fullmatch(name) is None or name in (".", ".."):
                raise ValueError(f"chunk file name {name!r}")
            channel = entry["channel"]
            chunks.append(
                ClipChunk(
                    directory / name,
                    None if channel is None else int(channel),
                    float(entry["offset"]),
                    float(entry["duration"]),
                )
            )
        return ClipIndex(directory, float(data["duration"]), tuple(chunks), kept_at)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{directory.name}/{INDEX} is unreadable: {exc}") from None


def keep_days(clip_days: int, retention_days: int) -> int:
    """How long clip audio is kept: `storage.clip_days`, cut to `retention_days` when that
    is shorter (the audio is personal data too); 0: none."""
    return min(clip_days, retention_days) if retention_days > 0 else clip_days


def expired(index: ClipIndex, now: float, clip_days: int) -> bool:
    return clip_days <= 0 or index.kept_at < now - clip_days * DAY


def _remove(directory: Path) -> bool:
    try:
        shutil.rmtree(directory)
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("clips: cannot remove %s: %s", directory.name, exc.strerror)
        return False
    return True


def delete_clips(audio_dir: Path, call_ids: Iterable[int]) -> int:
    """Delete the clip audio of `call_ids`; how many calls had some."""
    return sum(_remove(clip_dir(audio_dir, call_id)) for call_id in call_ids if clip_dir(audio_dir, call_id).is_dir())


def delete_expired_clips(audio_dir: Path, now: float, clip_days: int) -> int:
    """Delete every call's clip audio kept more than `clip_days` days before `now` (all of it
    when `clip_days` is 0: none is kept then); how many calls' audio went."""
    directory = Path(audio_dir)
    if not directory.is_dir():
        return 0
    cutoff = now - clip_days * DAY
    removed = 0
    for entry in os.scandir(directory):
        if not entry.is_dir(follow_symlinks=False) or _NAME.fullmatch(entry.name) is None:
            continue
        try:
            kept_at = os.stat(os.path.join(entry.path, INDEX)).st_mtime
        except FileNotFoundError:
            kept_at = entry.stat(follow_symlinks=False).st_mtime  # an index never written: its dir's age
        if clip_days <= 0 or kept_at < cutoff:
            removed += _remove(Path(entry.path))
    return removed
