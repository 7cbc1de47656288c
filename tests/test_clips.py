"""A quote's audio clip (`pipeline.clips.send_clip`), against the loopback Telegram: a stereo
call with tone markers at known seconds on each channel goes through the real pipeline (the
real transcriber's `audio.prepare`, against the fake OpenAI), its prepared Opus is kept, and
the clip Telegram receives is decoded to find the markers."""

from __future__ import annotations

import logging
import os
import shutil
from array import array
from pathlib import Path

import pytest

from salesbot_poller.app import build_openai, build_transcriber
from salesbot_poller.cli.forget import forget
from salesbot_poller.lanes import run_once
from salesbot_poller.pipeline.clips import GONE, NOT_KEPT, send_clip
from salesbot_poller.pipeline.retention import expire_clips
from salesbot_poller.services import clip_files
from salesbot_poller.services.audio import prepare
from salesbot_poller.services.clips import _mix, cut_clip
from salesbot_poller.store import Call, Clip
from tests.builder import Rig
from tests.conftest import CHAT_ID, Servers
from tests.fakes.audio import loud_onsets, write_marked_wav
from tests.fakes.tg_html import utf16_len
from tests.loopback_app import add_call, at, loopback_rig, ts

SECONDS = 95.0
LEFT = (3.0, 45.0, 88.0)  # the manager's channel: 1 kHz bursts
RIGHT = (47.0, 57.0, 70.0)  # the client's: 1.5 kHz (57 s lies past a chunk boundary, at 56 s)
NOW = ts(5)
DAY = 24 * 3600


class MarkedRecordings:
    """The recording host: every call's recording is the marked stereo call."""

    def __init__(self, directory: Path, source: Path) -> None:
        self.directory, self.source = directory, source

    def download(self, url: str, stem: str, note_seconds: int) -> Path:
        path = self.directory / f"{stem}.wav"
        path.write_bytes(self.source.read_bytes())
        return path


def transcribed(servers: Servers, tmp_path: Path, **sections: dict[str, object]) -> tuple[Rig, Call, int]:
    """A rig whose call 1 (the marked call) is transcribed by the real transcriber in chunks
    of 30 s overlapping by 2 s, analysed and posted; (rig, call, the card's message id)."""
    source = tmp_path / "marked.wav"
    write_marked_wav(source, SECONDS, LEFT, RIGHT)
    rig = loopback_rig(servers, paced=False, **sections)
    config = rig.app.config
    transcriber = build_transcriber(config, build_openai(config), None)
    transcriber._max_chunk = 30.0  # several chunks, so clips cross their overlaps
    rig.app.transcriber = transcriber
    rig.app.recordings = MarkedRecordings(Path(config.storage.audio_dir), source)
    add_call(rig, 1, duration=int(SECONDS))
    run_once(rig.app, at(0))
    call = Call.get_by_id(1)
    assert call.stage == "notified", call.last_error
    return rig, call, int(servers.telegram.messages[0]["message_id"])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The marked call prepared once through `audio.prepare` as the transcriber prepares it,
    kept as a call's clip audio is (`clip_files.keep`)."""
    where = tmp_path_factory.mktemp("prepared")
    write_marked_wav(where / "call-1.wav", SECONDS, LEFT, RIGHT)
    chunks = prepare(where / "call-1.wav", where / "work", split_channels=True, chunk_seconds=30, overlap_seconds=2)
    clip_files.keep(chunks, where / "clip-1")
    return where / "clip-1"


@pytest.fixture
def kept(servers: Servers, prepared: Path) -> tuple[Rig, Call, int]:
    """A posted call whose clip audio is the marked call's (the transcription itself is the
    memory fake's: `test_the_transcriber_keeps_...` runs the real one)."""
    rig = loopback_rig(servers, paced=False)
    add_call(rig, 1, duration=int(SECONDS))
    run_once(rig.app, at(0))
    call = Call.get_by_id(1)
    assert call.stage == "notified", call.last_error
    shutil.copytree(prepared, clip_files.clip_dir(rig.app.config.storage.audio_dir, call.id))
    return rig, call, int(servers.telegram.messages[0]["message_id"])


@pytest.mark.slow
def test_the_transcriber_keeps_the_prepared_opus_per_call_with_its_index(servers: Servers, tmp_path: Path) -> None:
    rig, call, card = transcribed(servers, tmp_path)
    index = clip_files.read_index(clip_files.clip_dir(rig.app.config.storage.audio_dir, call.id))
    assert index is not None and index.duration == pytest.approx(SECONDS)
    assert [[c.offset for c in track] for track in index.tracks] == [[0.0, 28.0, 56.0, 84.0]] * 2
    assert {c.channel for c in index.chunks} == {0, 1}
    assert all(c.path.suffix == ".ogg" and c.path.exists() for c in index.chunks)
    assert not list(Path(rig.app.config.storage.audio_dir).glob("call-1*")), "the recording itself is not kept"
    assert send_clip(rig.app, call.id, 45, "Цена", CHAT_ID, card, NOW) is None
    assert loud_onsets(servers.telegram.clips[0]["bytes"])[1] == pytest.approx([5.0, 7.0, 17.0], abs=0.1)


def test_a_pressed_quote_sends_25_seconds_from_5_before_it_with_both_channels(
    kept: tuple[Rig, Call, int], servers: Servers
) -> None:
    rig, call, card = kept
    assert send_clip(rig.app, call.id, 45, "Сколько стоит <доставка> & сборка?", CHAT_ID, card, NOW) is None
    (sent,) = servers.telegram.clips
    assert sent["method"] == "sendVoice" and sent["uploaded"] and sent["bytes"][:4] == b"OggS"
    assert sent["reply_parameters"]["message_id"] == card
    assert sent["caption"] == "Иван Петров · 00:45 · «Сколько стоит &lt;доставка&gt; &amp; сборка?»"
    duration, onsets = loud_onsets(sent["bytes"])
    assert duration == pytest.approx(25.0, abs=0.1)
    # The quote's marker (left, 45 s) 5 s in; the client's (right) at 47 s and, from the next
    # chunk, at 57 s: both channels, in place, each heard once across the chunks' overlap.
    assert onsets == pytest.approx([5.0, 7.0, 17.0], abs=0.1)
    assert Clip.get().file_id == sent["file_id"]


def test_clips_at_the_start_and_at_the_end_are_clamped_to_the_recording(
    kept: tuple[Rig, Call, int], servers: Servers
) -> None:
    rig, call, card = kept
    assert send_clip(rig.app, call.id, 2, "Алло", CHAT_ID, card, NOW) is None
    assert send_clip(rig.app, call.id, 90, "До свидания", CHAT_ID, card, NOW) is None
    start, end = (loud_onsets(sent["bytes"]) for sent in servers.telegram.clips)
    assert start[0] == pytest.approx(22.0, abs=0.1) and start[1] == pytest.approx([3.0], abs=0.1)
    assert end[0] == pytest.approx(10.0, abs=0.1) and end[1] == pytest.approx([3.0], abs=0.1)  # 85..95 s
    assert "00:02" in servers.telegram.clips[0]["caption"]


@pytest.mark.postgres
def test_a_second_press_resends_the_stored_file_id_without_cutting_or_uploading(
    kept: tuple[Rig, Call, int], servers: Servers
) -> None:
    rig, call, card = kept
    assert send_clip(rig.app, call.id, 45, "Цена", CHAT_ID, card, NOW) is None
    index = clip_files.read_index(clip_files.clip_dir(rig.app.config.storage.audio_dir, call.id))
    assert index is not None
    for chunk in index.chunks:  # nothing left to cut from: only the stored file id can serve
        chunk.path.unlink()
    assert send_clip(rig.app, call.id, 45, "Цена", CHAT_ID, card, NOW) is None
    first, second = servers.telegram.clips
    assert second["method"] == "sendVoice" and not second["uploaded"] and second["file_id"] == first["file_id"]
    assert Clip.select().count() == 1


def test_a_chat_refusing_voice_messages_gets_the_clip_as_an_audio_file(
    kept: tuple[Rig, Call, int], servers: Servers
) -> None:
    rig, call, card = kept
    servers.telegram.voice_forbidden_chats = {CHAT_ID}
    assert send_clip(rig.app, call.id, 45, "Цена", CHAT_ID, card, NOW) is None
    assert send_clip(rig.app, call.id, 45, "Цена", CHAT_ID, card, NOW) is None
    first, second = servers.telegram.clips
    assert first["method"] == "sendAudio" and first["uploaded"]
    assert second["method"] == "sendAudio" and not second["uploaded"], "re-sent as what was stored"
    assert Clip.get().kind == "audio"


def test_telegram_refusing_the_clip_for_good_is_the_answer(kept: tuple[Rig, Call, int], servers: Servers) -> None:
    rig, call, card = kept
    answer = send_clip(rig.app, call.id, 45, "Цена", "-100999", card, NOW)  # a chat Telegram does not know
    assert answer is not None and answer.startswith("не удалось отправить запись: ") and "chat not found" in answer
    assert len(answer) <= 200 and Clip.select().count() == 0


@pytest.mark.parametrize("damage", ["missing", "corrupt", "truncated", "index"])
def test_missing_or_corrupt_audio_answers_the_failure_text_with_one_log_line(
    kept: tuple[Rig, Call, int], servers: Servers, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    rig, call, card = kept
    directory = clip_files.clip_dir(rig.app.config.storage.audio_dir, call.id)
    chunk = sorted(directory.glob("*-ch1-001.ogg"))[0]  # the client's channel around 45 s
    if damage == "missing":
        chunk.unlink()
    elif damage == "corrupt":
        chunk.write_bytes(os.urandom(chunk.stat().st_size))
    elif damage == "truncated":  # a disk that filled up while it was kept: its first 10 s only
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 3])
    else:
        (directory / "index.json").write_text("{not json")
    caplog.set_level(logging.INFO, logger="salesbot_poller.pipeline.clips")
    assert (
        send_clip(rig.app, call.id, 45, "Цена", CHAT_ID, card, NOW) == "не удалось отправить запись: запись повреждена"
    )
    assert servers.telegram.clips == [] and Clip.select().count() == 0
    (line,) = [r for r in caplog.records if r.name == "salesbot_poller.pipeline.clips"]
    assert line.levelno == logging.WARNING and f"call {call.id}: clip at 00:45" in line.getMessage()


def test_after_clip_days_the_press_says_the_recording_is_gone_and_retention_deletes_it(
    kept: tuple[Rig, Call, int], servers: Servers
) -> None:
    rig, call, card = kept
    audio_dir = rig.app.config.storage.audio_dir
    index = clip_files.clip_dir(audio_dir, call.id) / "index.json"
    kept_at = NOW - 15 * DAY
    os.utime(index, (kept_at, kept_at))
    assert send_clip(rig.app, call.id, 45, "Цена", CHAT_ID, card, NOW) == "Запись уже удалена (хранится 14 дней)"
    assert expire_clips(rig.app, NOW - 2 * DAY) == 0, "13 days: kept"
    assert expire_clips(rig.app, NOW) == 1
    assert not clip_files.clip_dir(audio_dir, call.id).exists()
    assert send_clip(rig.app, call.id, 45, "Цена", CHAT_ID, card, NOW) == GONE.format(days=14)
    assert send_clip(rig.app, 999, 45, "Цена", CHAT_ID, card, NOW) == GONE.format(days=14), "no such call"
    assert servers.telegram.clips == []


@pytest.mark.postgres
def test_forget_deletes_the_clip_audio_and_the_stored_file_ids(kept: tuple[Rig, Call, int], servers: Servers) -> None:
    rig, call, card = kept
    assert send_clip(rig.app, call.id, 45, "Цена", CHAT_ID, card, NOW) is None
    audio_dir = rig.app.config.storage.audio_dir
    outcome = forget(
        rig.app.store,
        "+7 (999) 123-45-67",
        NOW,
        lambda _: None,
        lambda _: True,
        audio_dir=audio_dir,
        default_chat=CHAT_ID,
    )
    assert outcome.value == "done"
    assert not clip_files.clip_dir(audio_dir, call.id).exists() and Clip.select().count() == 0
    assert send_clip(rig.app, call.id, 45, "Цена", CHAT_ID, card, NOW) == GONE.format(days=14)
    assert len(servers.telegram.clips) == 1, "the stored file id went with the audio"


@pytest.mark.slow
def test_clip_days_0_keeps_no_audio(servers: Servers, tmp_path: Path) -> None:
    rig, call, card = transcribed(servers, tmp_path, storage={"clip_days": 0})
    assert not clip_files.clip_dir(rig.app.config.storage.audio_dir, call.id).exists()
    assert send_clip(rig.app, call.id, 45, "Цена", CHAT_ID, card, NOW) == NOT_KEPT
    assert servers.telegram.clips == []


@pytest.mark.slow
def test_mp3_uploads_are_kept_as_made_and_cut_as_well(servers: Servers, tmp_path: Path) -> None:
    rig, call, card = transcribed(servers, tmp_path, audio={"upload_format": "mp3"})
    index = clip_files.read_index(clip_files.clip_dir(rig.app.config.storage.audio_dir, call.id))
    assert index is not None and {c.path.suffix for c in index.chunks} == {".mp3"}
    assert send_clip(rig.app, call.id, 45, "Цена", CHAT_ID, card, NOW) is None
    duration, onsets = loud_onsets(servers.telegram.clips[0]["bytes"])
    assert duration == pytest.approx(25.0, abs=0.1)
    assert onsets == pytest.approx([5.0, 7.0, 17.0], abs=0.5)  # MP3's encoder delay: tens of ms


def test_a_long_quote_is_cut_to_telegrams_caption_limit(kept: tuple[Rig, Call, int], servers: Servers) -> None:
    rig, call, card = kept
    assert send_clip(rig.app, call.id, 45, "слово & " * 400 + "😀" * 600, CHAT_ID, card, NOW) is None
    caption = servers.telegram.clips[0]["caption"]
    visible = caption.replace("&amp;", "&")
    assert utf16_len(visible) <= 1024 and visible.endswith("…»")


def test_delete_expired_clips_leaves_what_is_not_a_call_clip(tmp_path: Path) -> None:
    for name in ("clip-1", "clip-2", "clip-x", "call-3.wav"):
        path = tmp_path / name
        if name.startswith("clip"):
            path.mkdir()
            (path / "index.json").write_text("{}")
        else:
            path.write_bytes(b"")
    os.utime(tmp_path / "clip-1" / "index.json", (1000, 1000))
    assert clip_files.delete_expired_clips(tmp_path, 1000 + 14 * DAY + 1, 14) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["call-3.wav", "clip-2", "clip-x"]
    assert clip_files.delete_expired_clips(tmp_path, 0, 0) == 1, "clip_days 0: none kept"
    assert clip_files.delete_expired_clips(tmp_path / "nowhere", 0, 14) == 0


def test_two_loud_channels_are_scaled_down_together_never_wrapped() -> None:
    left, right = array("h", [20000, -20000, 30000, 100]), array("h", [20000, 0, 30000, -100])
    mixed = _mix([left, right])
    assert max(map(abs, mixed)) <= 32767 and mixed[2] == 32767 and mixed[0] > 21000 and mixed[1] < -10000
    assert list(_mix([array("h", [1000, -5]), array("h", [2000, 5])])) == [3000, 0], "no clipping: a plain sum"


def test_a_mono_recording_is_cut_from_its_one_track(tmp_path: Path) -> None:
    write_marked_wav(tmp_path / "call-7.wav", 40.0, (12.0,), (12.0,))
    made = prepare(
        tmp_path / "call-7.wav", tmp_path / "work", split_channels=False, chunk_seconds=15, overlap_seconds=2
    )
    clip_files.keep(made, tmp_path / "clip-7")
    index = clip_files.read_index(tmp_path / "clip-7")
    assert index is not None and {c.channel for c in index.chunks} == {None}
    assert cut_clip(index, 10.0, 35.0, tmp_path / "out.ogg") == pytest.approx(25.0)
    duration, onsets = loud_onsets((tmp_path / "out.ogg").read_bytes())
    assert duration == pytest.approx(25.0, abs=0.1) and onsets == pytest.approx([2.0], abs=0.1)
