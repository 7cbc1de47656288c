"""Preparation and chunking: an input over the upload limit is cut into overlapping chunks
that each fit, and the text comes back once, in order; non-audio fails permanently."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
import requests

from salesbot_poller.errors import PermanentError, TransientError
from salesbot_poller.services.audio import chunk_seconds_for, prepare, probe
from salesbot_poller.services.recordings import RecordingDownloader
from salesbot_poller.services.speech import (
    GPT4O_MAX_SECONDS,
    UPLOAD_LIMIT_BYTES,
    OpenAITranscriber,
    drop_repeated_words,
)
from tests.conftest import OPENAI_KEY, Servers
from tests.fakes import make_mp3, make_turns_mp3, tone_runs

# Four 9-second "sentences", each its own tone, so any chunk's text says where it came from.
BLOCKS = [(0.5, 9.5, 300.0), (10.5, 19.5, 500.0), (20.5, 29.5, 700.0), (30.5, 39.5, 900.0)]
# At the default 12 kbps this limit allows 10-second chunks (see `chunk_seconds_for`).
SMALL_LIMIT = round((10 * 12000 / 8 + 16 * 1024) / 0.85) + 1


def name(hz: float) -> str:
    return f"тон {round(hz, -2):.0f}"


def client(servers: Servers) -> openai.OpenAI:
    return openai.OpenAI(api_key=OPENAI_KEY, base_url=f"{servers.openai.base_url}/v1", max_retries=0, timeout=30)


def long_call(servers: Servers) -> Path:
    path = servers.tmp / "long.mp3"
    path.write_bytes(make_turns_mp3(40, BLOCKS))
    return path


def test_the_real_25_mb_limit_is_the_default_and_a_3_hour_channel_fits_one_upload(servers: Servers) -> None:
    assert UPLOAD_LIMIT_BYTES == 25 * 1024 * 1024
    assert OpenAITranscriber(client(servers), "whisper-1", "ru").upload_limit_bytes == UPLOAD_LIMIT_BYTES
    assert chunk_seconds_for(UPLOAD_LIMIT_BYTES, 12000, None) >= 3 * 3600
    assert chunk_seconds_for(UPLOAD_LIMIT_BYTES, 12000, GPT4O_MAX_SECONDS) == GPT4O_MAX_SECONDS


def test_an_input_over_the_limit_is_chunked_and_stitched_in_order(servers: Servers) -> None:
    audio = long_call(servers)
    assert audio.stat().st_size > SMALL_LIMIT
    servers.openai.max_upload_bytes = SMALL_LIMIT  # the fake enforces the same limit (413)
    servers.openai.segments_fn = lambda data, _n, _f: [(s, e, name(hz)) for s, e, hz in tone_runs(data)]
    transcriber = OpenAITranscriber(client(servers), "whisper-1", "ru", upload_limit_bytes=SMALL_LIMIT)
    transcript = transcriber.transcribe(audio)

    uploads = servers.openai.transcriptions
    assert [u["filename"] for u in uploads] == [f"long-{i:03d}.ogg" for i in range(5)]  # 0, 8, 16, 24, 32 s
    assert all(u["size"] <= SMALL_LIMIT for u in uploads)
    assert transcript.text == "тон 300 тон 500 тон 700 тон 900", "each sentence once, in order"
    assert [s.start for s in transcript.segments] == pytest.approx([0.5, 10.5, 20.5, 30.5], abs=0.15)
    assert transcript.audio_seconds == pytest.approx(40 + 4 * 2, abs=0.1), "overlaps are sent (and billed)"
    assert transcript.duration_seconds == pytest.approx(40, abs=0.1)
    assert not list(servers.tmp.glob("long-*")), "the chunk files are removed"


def test_text_only_chunks_drop_the_words_heard_twice(servers: Servers) -> None:
    servers.openai.max_upload_bytes = SMALL_LIMIT
    servers.openai.transcribe_fn = lambda data, _n, _f: " ".join(name(hz) for _, _, hz in tone_runs(data))
    transcriber = OpenAITranscriber(client(servers), "gpt-4o-mini-transcribe", "ru", upload_limit_bytes=SMALL_LIMIT)
    transcript = transcriber.transcribe(long_call(servers))
    assert len(servers.openai.transcriptions) == 5
    assert transcript.text == "тон 300 тон 500 тон 700 тон 900"


def test_drop_repeated_words() -> None:
    assert drop_repeated_words("мы отправим счёт сегодня", "Счет сегодня, и договор") == "и договор"
    assert drop_repeated_words("ну да", "да, конечно") == "да, конечно", "one matching word is not an overlap"
    assert drop_repeated_words("", "привет") == "привет"


def test_prepare_splits_stereo_and_reads_the_real_duration(tmp_path: Path) -> None:
    source = tmp_path / "s.mp3"
    source.write_bytes(make_mp3(3.0, stereo=True, freq=440, right_freq=880))
    prepared = prepare(source, tmp_path / "out", split_channels=True, chunk_seconds=600)
    assert prepared.duration == pytest.approx(3.0, abs=0.05) and prepared.channels == 2
    left, right = (track[0] for track in prepared.tracks)
    assert probe(left.path).channels == 1 and probe(left.path).duration == pytest.approx(3.0, abs=0.1)
    assert round(tone_runs(left.path.read_bytes())[0][2], -2) == 400
    assert round(tone_runs(right.path.read_bytes())[0][2], -2) == 900
    mp3 = prepare(source, tmp_path / "mp3", split_channels=False, chunk_seconds=600, fmt="mp3", bitrate=16000)
    assert mp3.chunks[0].path.suffix == ".mp3" and probe(mp3.chunks[0].path).sample_rate == 16000


# --- download: what is not audio fails permanently --------------------------------------------


def downloader(servers: Servers, max_bytes: int = 300 * 2**20) -> RecordingDownloader:
    return RecordingDownloader(requests.Session(), servers.tmp / "audio", max_bytes=max_bytes)


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"<html>User is not licensed</html>", "text/html", "answered text/html, not audio"),
        (b"<html>User is not licensed</html>", "application/octet-stream", "is not audio"),
        (b'{"error": "record not found"}', "application/json", "answered application/json, not audio"),
        (b"ID3" + bytes(range(256)) * 40, "audio/mpeg", "not decodable audio"),
    ],
)
def test_a_body_that_is_not_audio_fails_permanently(
    servers: Servers, body: bytes, content_type: str, message: str
) -> None:
    url = servers.recordings.add("/api/crm/record?id=1&hash=signature", body, content_type=content_type)
    with pytest.raises(PermanentError, match=message) as caught:
        downloader(servers).download(url, "call-1", 0)
    assert "signature" not in str(caught.value) and "127.0.0.1" in str(caught.value)
    assert not list((servers.tmp / "audio").iterdir()), "nothing is left behind"


def test_over_the_size_cap_is_permanent_and_a_404_still_waits(servers: Servers) -> None:
    url = servers.recordings.add("/big.mp3", make_mp3(20.0))
    with pytest.raises(PermanentError, match="over 0 MB"):
        downloader(servers, max_bytes=10_000).download(url, "call-1", 0)
    with pytest.raises(TransientError, match="HTTP 404"):
        downloader(servers).download(servers.recordings.url("/not-yet.mp3"), "call-2", 0)
    path = downloader(servers).download(url, "call-3", 0)
    assert probe(path).duration == pytest.approx(20.0, abs=0.1)


@pytest.mark.slow
def test_a_retry_after_a_failed_chunk_sends_only_the_chunks_still_missing(servers: Servers) -> None:
    audio = long_call(servers)
    failures = ["long-002.ogg"]

    def segments(data: bytes, filename: str, fields: dict[str, str]) -> list[tuple[float, float, str]]:
        if filename in failures:
            failures.remove(filename)
            raise RuntimeError("the fake fails this chunk once (500)")
        return [(s, e, name(hz)) for s, e, hz in tone_runs(data)]

    servers.openai.segments_fn = segments
    transcriber = OpenAITranscriber(client(servers), "whisper-1", "ru", upload_limit_bytes=SMALL_LIMIT)
    with pytest.raises(TransientError, match="HTTP 500"):
        transcriber.transcribe(audio)
    assert (servers.tmp / "long.mp3.pieces.json").exists()
    transcript = transcriber.transcribe(audio)
    sent = [u["filename"] for u in servers.openai.transcriptions]
    assert sent == ["long-000.ogg", "long-001.ogg", "long-002.ogg", "long-002.ogg", "long-003.ogg", "long-004.ogg"]
    assert transcript.text == "тон 300 тон 500 тон 700 тон 900"
    assert transcript.audio_seconds == pytest.approx(48, abs=0.1), "every chunk counted once"
    assert not (servers.tmp / "long.mp3.pieces.json").exists()


def test_a_stereo_file_with_the_same_audio_on_both_channels_is_transcribed_once(servers: Servers) -> None:
    audio = servers.tmp / "dual.mp3"
    audio.write_bytes(make_mp3(5.0, stereo=True, freq=440, right_freq=440))
    transcript = OpenAITranscriber(client(servers), "whisper-1", "ru").transcribe(audio)
    assert [u["filename"] for u in servers.openai.transcriptions] == ["dual-000.ogg"]
    assert {s.speaker for s in transcript.segments} == {""}
