"""OpenAI requests in flight, measured on the fake server: never more than the one shared
`RequestLimit` allows, however many workers, channels, chunks and analyses ask at once; the
two channels of a stereo call are sent side by side with the same result as one after the
other; the piece cache survives two channels writing at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import openai
import pytest

from salesbot_poller.app import build_app
from salesbot_poller.config import load_config
from salesbot_poller.domain import CallContext, Segment, Transcript
from salesbot_poller.errors import TransientError
from salesbot_poller.services.analysis import OpenAIAnalyzer
from salesbot_poller.services.audio import Chunk
from salesbot_poller.services.openai_limit import RequestLimit
from salesbot_poller.services.speech import OpenAITranscriber, Piece, PieceCache
from tests.conftest import OPENAI_KEY, Servers
from tests.fakes import make_mp3, make_turns_mp3, tone_runs

DELAY = 0.4  # seconds the fake takes to answer: long enough for requests to pile up
# At the default 12 kbps this limit allows 10-second chunks (as in test_audio_chunks).
SMALL_LIMIT = round((10 * 12000 / 8 + 16 * 1024) / 0.85) + 1
# A 40-second call, one 9-second "sentence" (tone) each, the parties taking turns; a 10-second one.
LEFT = [(0.5, 9.5, 300.0), (20.5, 29.5, 700.0)]
RIGHT = [(10.5, 19.5, 500.0), (30.5, 39.5, 900.0)]
SHORT_LEFT, SHORT_RIGHT = [(0.5, 4.5, 300.0)], [(5.5, 9.5, 500.0)]
CONTEXT = CallContext("in", "Иван", "leads", "ООО", "u", "+7", 125, 1_760_000_000)


def client(servers: Servers) -> openai.OpenAI:
    return openai.OpenAI(api_key=OPENAI_KEY, base_url=f"{servers.openai.base_url}/v1", max_retries=0, timeout=30)


def heard(data: bytes, filename: str, fields: dict[str, str]) -> list[tuple[float, float, str]]:
    return [(s, e, f"тон {round(hz, -2):.0f}") for s, e, hz in tone_runs(data)]


def stereo_call(folder: Path, *, short: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "stereo.mp3"
    path.write_bytes(make_turns_mp3(10, SHORT_LEFT, SHORT_RIGHT) if short else make_turns_mp3(40, LEFT, RIGHT))
    return path


def run_together(jobs: list[Callable[[], object]]) -> list[BaseException]:
    """Start every job on its own thread at the same instant; the errors they raised."""
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def run(job: Callable[[], object]) -> None:
        barrier.wait()
        try:
            job()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def overlapped(a: dict[str, float], b: dict[str, float]) -> bool:
    """Whether the fake was answering both uploads at one instant."""
    return max(a["received"], b["received"]) < min(a["answered"], b["answered"])


# --- one limit for the whole process ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("size", [None, 1, 2])
def test_requests_in_flight_never_exceed_the_shared_limit(servers: Servers, size: int | None) -> None:
    servers.openai.transcribe_delay = DELAY
    servers.openai.chat_delay = DELAY
    servers.openai.segments_fn = heard
    limit = RequestLimit(size) if size else None
    oai = client(servers)
    transcriber = OpenAITranscriber(oai, "whisper-1", "ru", limit=limit)
    analyzer = OpenAIAnalyzer(oai, "gpt-4o-mini", limit=limit)
    monos = []
    for n in range(4):  # four workers, each with a call of its own
        (servers.tmp / f"w{n}").mkdir()
        monos.append(servers.tmp / f"w{n}" / "call.mp3")
        monos[-1].write_bytes(make_mp3(2.0, freq=300 + 100 * n))
    stereo = stereo_call(servers.tmp / "w4", short=True)
    jobs: list[Callable[[], object]] = [lambda path=path: transcriber.transcribe(path) for path in monos]
    jobs.append(lambda: transcriber.transcribe(stereo))  # two channels: two requests
    jobs += [lambda: analyzer.analyse("Менеджер: Добрый день!", CONTEXT) for _ in range(2)]

    assert run_together(jobs) == []
    assert len(servers.openai.transcriptions) == 6 and len(servers.openai.chat_requests) == 2
    if size is None:
        # The control: without a limit the same load piles up on the server, so the
        # measurement below would catch a limit that is not applied.
        assert servers.openai.max_in_flight > 2
    else:
        assert servers.openai.max_in_flight == size, "the limit is reached, never exceeded"


def test_request_limit_rejects_a_size_below_one() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        RequestLimit(0)


def test_build_app_shares_one_limit_sized_by_the_config(servers: Servers) -> None:
    config = load_config(servers.write_config(workers=3), {})
    app = build_app(config, lambda: datetime.now(UTC))
    try:
        transcriber, analyzer = app.transcriber, app.analyzer
        assert isinstance(transcriber, OpenAITranscriber) and isinstance(analyzer, OpenAIAnalyzer)
        assert transcriber.limit is analyzer.limit and transcriber.limit is not None
        assert transcriber.limit.size == 6, "openai.max_concurrent_requests = 0: two slots per worker"
    finally:
        app.store.close()
    path = servers.write_config(workers=3)
    path.write_text(path.read_text().replace("[openai]\n", "[openai]\nmax_concurrent_requests = 2\n"))
    app = build_app(load_config(path, {}), lambda: datetime.now(UTC))
    try:
        assert isinstance(app.transcriber, OpenAITranscriber) and app.transcriber.limit is not None
        assert app.transcriber.limit.size == 2, "set explicitly: it wins over the worker count"
    finally:
        app.store.close()


@pytest.mark.slow
def test_by_default_every_worker_sends_both_channels_of_a_stereo_call_at_once(servers: Servers) -> None:
    servers.openai.transcribe_delay = DELAY
    servers.openai.segments_fn = heard
    app = build_app(load_config(servers.write_config(workers=2), {}), lambda: datetime.now(UTC))
    try:
        calls = [stereo_call(servers.tmp / f"w{n}", short=True) for n in range(2)]
        assert run_together([lambda path=path: app.transcriber.transcribe(path) for path in calls]) == []
    finally:
        app.store.close()
    assert len(servers.openai.transcriptions) == 4
    assert servers.openai.max_in_flight == 4, "two workers, two channels each: no channel waits for a slot"


@pytest.mark.slow
def test_a_worker_prepares_its_audio_while_every_slot_is_taken_by_other_requests(servers: Servers) -> None:
    servers.openai.segments_fn = heard
    limit = RequestLimit(1)
    work = servers.tmp / "work"
    work.mkdir()
    transcriber = OpenAITranscriber(client(servers), "whisper-1", "ru", limit=limit, work_dir=work)
    audio = stereo_call(servers.tmp / "w0", short=True)
    done: list[Transcript] = []
    worker = threading.Thread(target=lambda: done.append(transcriber.transcribe(audio)))
    with limit:  # another worker's request, waiting for OpenAI's answer
        worker.start()
        deadline = time.monotonic() + 30
        while len(list(work.rglob("*.ogg"))) < 2:  # both channels decoded, resampled and encoded
            assert time.monotonic() < deadline, "the audio was not prepared while the slot was taken"
            time.sleep(0.02)
        assert servers.openai.transcriptions == [], "nothing is sent without a slot"
    worker.join(timeout=30)
    assert [t.text for t in done] == ["тон 300\nтон 500"]


# --- the two channels side by side ----------------------------------------------------------


@pytest.mark.slow
def test_the_two_channels_are_sent_side_by_side_with_the_same_result(servers: Servers) -> None:
    servers.openai.transcribe_delay = DELAY
    servers.openai.segments_fn = heard
    audio = stereo_call(servers.tmp, short=True)
    transcript = OpenAITranscriber(client(servers), "whisper-1", "ru").transcribe(audio)
    left, right = sorted(servers.openai.transcriptions, key=lambda u: str(u["filename"]))
    assert (left["filename"], right["filename"]) == ("stereo-ch0-000.ogg", "stereo-ch1-000.ogg")
    assert overlapped(left, right), "channel 1 is sent while channel 0 waits for its answer"

    # One slot makes them take turns: the measure above can fail, and the result is the same.
    servers.openai.transcriptions.clear()
    alone = OpenAITranscriber(client(servers), "whisper-1", "ru", limit=RequestLimit(1)).transcribe(audio)
    first, second = servers.openai.transcriptions
    assert not overlapped(first, second)
    assert alone == transcript
    assert transcript.text == "тон 300\nтон 500"
    assert [(s.speaker, s.text) for s in transcript.segments] == [("left", "тон 300"), ("right", "тон 500")]


def expected_long_stereo() -> tuple[str, list[tuple[int, str, str]]]:
    return "тон 300 тон 700\nтон 500 тон 900", [
        (0, "left", "тон 300"),
        (10, "right", "тон 500"),
        (20, "left", "тон 700"),
        (30, "right", "тон 900"),
    ]


def summary(transcript: Transcript) -> tuple[str, list[tuple[int, str, str]]]:
    return transcript.text, [(round(s.start), s.speaker, s.text) for s in transcript.segments]


@pytest.mark.slow
def test_chunked_channels_side_by_side_stitch_as_before(servers: Servers) -> None:
    servers.openai.max_upload_bytes = SMALL_LIMIT
    servers.openai.segments_fn = heard
    audio = stereo_call(servers.tmp)
    transcriber = OpenAITranscriber(client(servers), "whisper-1", "ru", upload_limit_bytes=SMALL_LIMIT)
    transcript = transcriber.transcribe(audio)
    names = sorted(str(u["filename"]) for u in servers.openai.transcriptions)
    assert names == sorted(f"stereo-ch{ch}-{i:03d}.ogg" for ch in (0, 1) for i in range(5))
    assert summary(transcript) == expected_long_stereo()
    assert transcript.audio_seconds == pytest.approx(2 * 48, abs=0.2)


@pytest.mark.slow
def test_a_failing_channel_fails_the_call_and_the_retry_pays_only_what_is_missing(servers: Servers) -> None:
    servers.openai.max_upload_bytes = SMALL_LIMIT
    servers.openai.transcribe_delay = 0.2  # the channels keep pace: channel 1 fails at its first chunk
    failures = ["stereo-ch1-000.ogg"]

    def segments(data: bytes, filename: str, fields: dict[str, str]) -> list[tuple[float, float, str]]:
        if filename in failures:
            failures.remove(filename)
            raise RuntimeError("the fake fails this chunk once (500)")
        return heard(data, filename, fields)

    servers.openai.segments_fn = segments
    audio = stereo_call(servers.tmp)
    transcriber = OpenAITranscriber(client(servers), "whisper-1", "ru", upload_limit_bytes=SMALL_LIMIT)
    with pytest.raises(TransientError, match="HTTP 500"):
        transcriber.transcribe(audio)
    first = [str(u["filename"]) for u in servers.openai.transcriptions]
    assert sum("-ch0-" in name for name in first) < 5, "channel 0 stops sending once channel 1 has failed"
    assert (servers.tmp / "stereo.mp3.pieces.json").exists()

    servers.openai.transcriptions.clear()
    transcript = transcriber.transcribe(audio)
    again = [str(u["filename"]) for u in servers.openai.transcriptions]
    paid_first = set(first) - {"stereo-ch1-000.ogg"}
    assert not paid_first & set(again), "no chunk answered the first time is sent again"
    assert paid_first | set(again) == {f"stereo-ch{ch}-{i:03d}.ogg" for ch in (0, 1) for i in range(5)}
    assert summary(transcript) == expected_long_stereo()
    assert not (servers.tmp / "stereo.mp3.pieces.json").exists()


def test_the_piece_cache_keeps_every_piece_two_threads_put_at_once(tmp_path: Path) -> None:
    path = tmp_path / "call.mp3.pieces.json"
    cache = PieceCache(path, "whisper-1|ogg|12000")

    def piece(channel: int, index: int) -> Piece:
        chunk = Chunk(tmp_path / f"c{channel}-{index}.ogg", channel, index, index * 8.0, 10.0)
        return Piece(chunk, f"{channel}/{index}", [Segment(0.0, 1.0, f"{channel}/{index}", "")], True)

    def put_all(channel: int) -> Callable[[], object]:
        return lambda: [cache.put(piece(channel, index)) for index in range(300)]

    assert run_together([put_all(0), put_all(1)]) == []
    reloaded = PieceCache(path, "whisper-1|ogg|12000")
    for channel in (0, 1):
        for index in range(300):
            found = reloaded.get(piece(channel, index).chunk)
            assert found is not None and found.text == f"{channel}/{index}"
