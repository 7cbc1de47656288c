"""The daily budget is paid per upload, never trusted from a note, and a recording is cut at
`poller.max_call_minutes`: a note that claims a week (or a widget writing milliseconds) with a
10-hour recording behind it costs at most the budget, waits for tomorrow and resumes there.

The real transcriber (`app.build_transcriber`, as the composition root builds it) speaks to
the fake OpenAI server, which counts the seconds it was sent."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from salesbot_poller.app import build_openai, build_transcriber
from salesbot_poller.config import OpenAIConfig
from salesbot_poller.domain import CallEvent, CallNote, Stage
from salesbot_poller.errors import BudgetReached
from salesbot_poller.lanes import run_once
from salesbot_poller.pipeline import usage
from salesbot_poller.pipeline.usage import BudgetGate
from salesbot_poller.services.speech import OpenAITranscriber
from salesbot_poller.store import Call, Store, Usage
from tests.builder import Rig, build_rig
from tests.conftest import Servers
from tests.fakes import make_mp3, make_silence_flac

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
MIDNIGHT = int(datetime(2026, 11, 26, tzinfo=UTC).timestamp())
A_WEEK = 604_800  # what the note claims, in seconds
ALERT_CHAT = "-100777"


@dataclass
class FileRecordings:
    """Every call's recording is `data` (a real audio file): the `RecordingFetcher` the pipeline sees."""

    directory: Path
    data: bytes
    downloads: list[str] = field(default_factory=list)

    def download(self, url: str, stem: str, note_seconds: int) -> Path:
        self.downloads.append(url)
        path = self.directory / f"{stem}.rec"  # any container: the decoder reads what it is
        path.write_bytes(self.data)
        return path


def speech_rig(
    servers: Servers, recording: bytes, calls: int = 1, note_seconds: int = A_WEEK, **sections: dict[str, Any]
) -> Rig:
    """A rig whose recordings are `recording` (their notes claim `note_seconds`) and whose
    transcriber is the real one."""
    rig = build_rig(servers.config_text(), **sections)
    app = rig.app
    app.recordings = FileRecordings(Path(app.config.storage.audio_dir), recording)
    app.transcriber = build_transcriber(app.config, build_openai(app.config, app.config.openai.transcription), None)
    for n in range(1, calls + 1):
        rig.source.add(
            CallEvent(f"01EVENT{n:019d}", "in", "leads", 7000 + n, 100 + n, int(T0.timestamp()) - 600 + n),
            CallNote(100 + n, note_seconds, "+79991234567", f"https://rec.example/{n}.flac", 4, "Sipuni", 555, None),
        )
    return rig


def uploaded_seconds(servers: Servers) -> list[float]:
    return [float(u["seconds"]) for u in servers.openai.transcriptions]


def calls() -> list[Call]:
    return list(Call.select().order_by(Call.id))


def budget_notices(rig: Rig) -> list[str]:
    return [html for kind, to, _, html in rig.notifier.log if to and to.chat_id == ALERT_CHAT and "бюджет" in html]


@pytest.mark.slow
def test_a_ten_hour_recording_claiming_a_week_stops_at_the_budget_and_resumes_tomorrow(
    servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    # $0.048 a minute: the first 20-minute upload ($0.96) fits the $1 budget, the second (62 s,
    # $0.05) would cross it. The cap (21 min here, to keep the test short) is all that is decoded.
    rig = speech_rig(
        servers,
        make_silence_flac(10 * 3600),
        openai={"daily_budget_usd": 1.0, "audio_price_per_minute_usd": 0.048},
        poller={"max_call_minutes": 21},
        telegram={"alert_chat_id": ALERT_CHAT},
    )
    app = rig.app
    caplog.set_level(logging.INFO, logger="salesbot_poller")
    run_once(app, T0, workers=1)
    (call,) = calls()
    assert (call.stage, call.next_attempt_at, call.attempts, call.last_error) == (Stage.DOWNLOADED, MIDNIGHT, 0, None)
    assert uploaded_seconds(servers) == pytest.approx([1200.0], abs=0.5), "one upload, then the budget stopped it"
    today = usage.day_start(int(T0.timestamp()))
    assert usage.budget_used(app.store, app.config.openai, int(T0.timestamp())) <= 1.0
    assert app.store.held_usd(today) == 0, "the answered upload is spent, not held"

    for hours in (1, 2, 14):  # later passes the same day: told once, nothing more sent
        run_once(app, T0 + timedelta(hours=hours), workers=1)
    assert len(budget_notices(rig)) == 1, rig.notifier.log
    assert "Звонков ждут расшифровки: 1" in budget_notices(rig)[0]
    assert len(servers.openai.transcriptions) == 1
    assert not any("Входящий звонок" in html for html in rig.notifier.sent), "no card before it is transcribed"

    run_once(app, datetime(2026, 11, 26, 0, 5, tzinfo=UTC), workers=1)
    (call,) = calls()
    assert call.stage == Stage.NOTIFIED
    seconds = uploaded_seconds(servers)
    assert seconds == pytest.approx([1200.0, 62.0], abs=0.5), "resumed from the second upload: the first not repaid"
    paid = sorted((row.at >= MIDNIGHT, round(row.audio_seconds)) for row in Usage.select())
    assert paid == [(False, 1200), (True, 62)], "each upload counted once, on the day it was paid"
    card = next(html for html in rig.notifier.sent if "Входящий звонок" in html)
    assert "⚠️ Запись длиннее 21 мин: разобраны первые 21 мин" in card
    cut_lines = [r.getMessage() for r in caplog.records if "max_call_minutes" in r.getMessage()]
    assert cut_lines == [
        f"call {call.id}: the recording is longer than poller.max_call_minutes=21: only its first "
        f"21 min transcribed (its note says {A_WEEK} s)"
    ]
    assert len(budget_notices(rig)) == 1


def test_only_the_first_max_call_minutes_of_a_recording_reach_the_speech_server(
    servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    rig = speech_rig(
        servers, make_silence_flac(30 * 60), openai={"daily_budget_usd": 0.0}, poller={"max_call_minutes": 2}
    )
    caplog.set_level(logging.WARNING, logger="salesbot_poller")
    run_once(rig.app, T0, workers=1)
    (call,) = calls()
    assert call.stage == Stage.NOTIFIED and call.cut_minutes == 2
    assert sum(uploaded_seconds(servers)) == pytest.approx(120.0, abs=0.5), "2 of the 30 minutes sent"
    assert "⚠️ Запись длиннее 2 мин: разобраны первые 2 мин" in rig.notifier.sent[0]
    lines = [r.getMessage() for r in caplog.records if "max_call_minutes" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith(f"call {call.id}: the recording is longer than")


def test_a_recording_under_the_cap_is_not_said_to_be_cut(servers: Servers) -> None:
    rig = speech_rig(servers, make_silence_flac(60), openai={"daily_budget_usd": 0.0}, poller={"max_call_minutes": 2})
    run_once(rig.app, T0, workers=1)
    (call,) = calls()
    assert call.stage == Stage.NOTIFIED and call.cut_minutes is None
    assert "Запись длиннее" not in rig.notifier.sent[0]


def test_both_channels_of_a_stereo_call_pay_each_upload_through_the_budget(servers: Servers) -> None:
    rig = speech_rig(servers, make_mp3(20.0, stereo=True), note_seconds=20, openai={"daily_budget_usd": 5.0})
    run_once(rig.app, T0, workers=1)
    (call,) = calls()
    assert call.stage == Stage.NOTIFIED
    assert sorted(round(row.audio_seconds) for row in Usage.select()) == [20, 20], "one row per upload, each once"
    assert rig.app.store.held_usd(usage.day_start(int(T0.timestamp()))) == 0


# At the default 12 kbps this upload limit allows 30-second uploads (`chunk_seconds_for`).
LIMIT_30_S = round((30 * 12000 / 8 + 16 * 1024) / 0.85) + 1


@pytest.mark.postgres
@pytest.mark.slow
def test_four_workers_racing_for_the_last_budget_never_reserve_more_than_it(servers: Servers) -> None:
    # Four 2-minute recordings whose notes claim 10 s; $1 a minute, a $1.20 budget: two
    # 30-second uploads fit ($1.07 with their overlap), a third would not.
    rig = speech_rig(
        servers,
        make_silence_flac(120),
        calls=4,
        note_seconds=10,  # the widget says 10 s
        openai={"daily_budget_usd": 1.2, "audio_price_per_minute_usd": 1.0},
    )
    app = rig.app
    app.transcriber = OpenAITranscriber(
        build_openai(app.config, app.config.openai.transcription), "whisper-1", "ru", upload_limit_bytes=LIMIT_30_S
    )
    servers.openai.transcribe_delay = 0.3  # every upload is in flight while the others reserve
    seen: list[float] = []
    stop = threading.Event()

    def watch() -> None:  # what is reserved or spent, as the workers race
        while not stop.is_set():
            with app.store.db.connection_context():
                seen.append(usage.budget_used(app.store, app.config.openai, int(T0.timestamp())))
            stop.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        run_once(app, T0, workers=4)
    finally:
        stop.set()
        watcher.join()
    paid = sum(uploaded_seconds(servers)) / 60 * 1.0
    assert paid <= 1.2, f"${paid:.2f} uploaded of a $1.20 budget"
    assert max(seen) <= 1.2
    assert {c.stage for c in calls()} == {Stage.DOWNLOADED}, "all four wait for tomorrow: none failed"
    assert {c.next_attempt_at for c in calls()} == {MIDNIGHT}


def race(store: Store, prices: OpenAIConfig, now: int, workers: int = 8) -> list[int]:
    """`workers` calls reserve a 1-minute upload at the same instant: the tickets granted."""
    gate = BudgetGate()
    barrier = threading.Barrier(workers)
    granted: list[int] = []
    lock = threading.Lock()

    def worker(call_id: int) -> None:
        with store.db.connection_context():
            meter = gate.meter(store, prices, call_id, now)
            barrier.wait()
            try:
                ticket = meter.reserve(60.0, "whisper-1")
            except BudgetReached:
                return
            with lock:
                granted.append(ticket)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return granted


@pytest.mark.postgres
def test_uploads_reserved_at_the_same_instant_never_pass_the_budget(database_url: str) -> None:
    now = int(T0.timestamp())
    store = Store.open(database_url, now)
    prices = OpenAIConfig(audio_price_per_minute_usd=1.0, daily_budget_usd=2.5)  # two 1-minute uploads
    try:
        for _ in range(5):  # rounds: a race lost once is enough to fail
            granted = race(store, prices, now)
            assert len(granted) == 2, f"{len(granted)} uploads of $1 reserved against a $2.50 budget"
            assert store.held_usd(usage.day_start(now)) == 2.0
            for ticket in granted:
                store.release_upload(ticket)
    finally:
        store.close()


def test_an_upload_left_in_flight_by_a_dead_process_counts_as_spent(tmp_path: Path) -> None:
    now = int(T0.timestamp())
    store = Store.open(f"sqlite:///{tmp_path}/db.sqlite", now)
    prices = OpenAIConfig(audio_price_per_minute_usd=1.0, daily_budget_usd=2.5)
    BudgetGate().meter(store, prices, 7, now).reserve(60.0, "whisper-1")  # then the process dies
    BudgetGate().meter(store, prices, 7, now + 600)  # the call's next attempt
    assert [(u.call_id, u.audio_seconds, u.at) for u in Usage.select()] == [(7, 60.0, now)], "OpenAI may have billed it"
    assert store.held_usd(usage.day_start(now)) == 0
    assert usage.budget_used(store, prices, now) == 1.0
    store.close()
