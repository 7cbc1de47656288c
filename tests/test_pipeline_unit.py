"""The pipeline's decisions, through its interfaces, with in-memory services and a real
SQLite store. Time is passed in; nothing sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from salesbot_poller.cli import commands
from salesbot_poller.domain import CallEvent, CallNote, Stage
from salesbot_poller.errors import FatalError, PermanentError, TransientError
from salesbot_poller.lanes import run_once
from salesbot_poller.pipeline.context import App
from salesbot_poller.pipeline.intake import classify
from salesbot_poller.store import Call
from tests.builder import Rig, build_rig
from tests.rows import own_ids, own_parts

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def ts(minutes: float) -> int:
    return int(at(minutes).timestamp())


def note(
    note_id: int, duration: int = 125, link: str | None = "https://rec.example/1.mp3", status: int = 4
) -> CallNote:
    return CallNote(note_id, duration, "+79991234567", link, status, "MangoOfficeWidget", 555, None)


def event(n: int, direction: str = "in", entity: str = "leads", minutes: float = -10) -> CallEvent:
    return CallEvent(f"01EVENT{n:019d}", direction, entity, 7000 + n, 100 + n, ts(minutes))  # type: ignore[arg-type]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return build_rig(tmp_path, now=T0)


@pytest.fixture
def app(rig: Rig) -> App:
    return rig.app


def calls() -> list[Call]:
    return list(Call.select().order_by(Call.id))


@pytest.mark.parametrize(
    ("direction", "duration", "status", "link", "expected"),
    [
        ("in", 125, 4, "x", Stage.READY),
        ("out", 125, 4, "x", Stage.READY),
        ("in", 0, 4, None, Stage.MISSED),
        ("in", 30, 6, None, Stage.MISSED),  # "not reached" with ringing time counted
        ("in", 0, 7, None, Stage.MISSED),
        ("out", 0, 6, None, Stage.SKIPPED),
        ("in", 5, 4, "x", Stage.SKIPPED),
        ("in", 125, 4, None, Stage.NEW),  # answered, link not there yet: look again later
    ],
)
def test_classify_decides_each_kind_of_call(
    direction: str, duration: int, status: int, link: str | None, expected: Stage
) -> None:
    stage, _ = classify(direction, note(1, duration, link, status), min_duration=10)
    assert stage == expected


def test_cycle_notifies_answered_alerts_missed_skips_short_and_rerun_does_nothing(app: App, rig: Rig) -> None:
    source, notifier = rig.source, rig.notifier
    source.add(event(1), note(101), "ООО Ромашка")
    source.add(event(2, entity="contacts"), note(102, duration=0, link=None), "Пётр")
    source.add(event(3), note(103, duration=4))

    cycle = run_once(app, at(0))

    assert [c.stage for c in calls()] == ["notified", "missed_alerted", "skipped"]
    assert (cycle.new, cycle.transcribed, cycle.notified, cycle.alerted, cycle.skipped) == (3, 1, 1, 1, 1)
    # The missed call's alert goes first: it never waits for an answered call's analysis.
    assert "+7 999 123-45-67" in notifier.sent[0] and "Пропущенный" in notifier.sent[0]
    assert "ООО Ромашка" in notifier.sent[1] and "Иван Петров" in notifier.sent[1]
    assert calls()[2].skip_reason == "too short (4 s < 10 s)"
    assert not list(Path(app.config.storage.audio_dir).iterdir()), "audio is deleted once transcribed"

    again = run_once(app, at(1))
    assert (again.new, again.transcribed, len(notifier.sent)) == (0, 0, 2)


def test_first_cycle_looks_back_then_windows_overlap_the_cursor(app: App, rig: Rig) -> None:
    source = rig.source
    run_once(app, at(0))
    run_once(app, at(1))
    (first_since, first_until), (second_since, second_until) = source.windows
    assert first_since == ts(-60) and first_until == ts(0) - 5
    assert second_since == first_until - 300 and second_until == ts(1) - 5


def test_notes_are_read_in_one_batch_per_entity_type(app: App, rig: Rig) -> None:
    source = rig.source
    for n in range(1, 5):
        source.add(event(n, entity="leads" if n % 2 else "contacts"), note(100 + n))
    run_once(app, at(0))
    assert sorted(source.note_requests) == [("contacts", [102, 104]), ("leads", [101, 103])]


def test_recording_not_ready_backs_off_then_succeeds(app: App, rig: Rig) -> None:
    source, recordings = rig.source, rig.recordings
    source.add(event(1), note(101))
    recordings.failures = [TransientError("HTTP 404"), TransientError("HTTP 404")]

    run_once(app, at(0))
    (call,) = calls()
    assert (call.stage, call.attempts, call.next_attempt_at) == ("ready", 1, ts(0) + 60)
    run_once(app, at(0.5))  # not due yet: untouched
    assert calls()[0].attempts == 1
    run_once(app, at(1))
    assert (calls()[0].attempts, calls()[0].next_attempt_at) == (2, ts(1) + 120)
    run_once(app, at(3))
    assert calls()[0].stage == "notified" and len(recordings.downloads) == 3


def test_retry_after_from_the_server_is_honoured(app: App, rig: Rig) -> None:
    source, notifier = rig.source, rig.notifier
    source.add(event(1), note(101))
    notifier.failures = {1: TransientError("Telegram: 429", retry_after=600)}
    run_once(app, at(0))
    assert calls()[0].stage == "notifying" and calls()[0].next_attempt_at == ts(0) + 601


def test_a_crash_after_transcription_never_pays_for_it_again(app: App, rig: Rig) -> None:
    source, transcriber, analyzer = rig.source, rig.transcriber, rig.analyzer
    source.add(event(1), note(101))
    analyzer.failures = [RuntimeError("boom")]

    run_once(app, at(0))  # an unexpected error: the call is set aside, not retried by itself
    assert calls()[0].stage == "quarantined" and "RuntimeError" in (calls()[0].last_error or "")
    run_once(app, at(5))
    assert calls()[0].stage == "quarantined" and len(analyzer.calls) == 1
    assert commands.retry(app.store, [calls()[0].id], False, ts(6), lambda line: None)
    assert calls()[0].stage == "transcribed"  # the stored transcript is reused
    run_once(app, at(6))
    assert calls()[0].stage == "notified"
    assert len(transcriber.calls) == 1 and len(analyzer.calls) == 2


def test_a_failed_second_part_resends_only_that_part(app: App, rig: Rig) -> None:
    source, notifier, analyzer = rig.source, rig.notifier, rig.analyzer
    source.add(event(1), note(101))
    original = analyzer.analyse

    def long_analysis(transcript: str, context: object) -> object:
        result = original(transcript, context)  # type: ignore[arg-type]
        # Each field is cut: a long summary and long lists make the card two parts.
        needs = ["Очень длинная потребность клиента. " * 10] * 8
        update = {"summary": "Очень длинный итог. " * 400, "client_needs": needs, "risk_flags": needs}
        return result.model_copy(update=update)

    analyzer.analyse = long_analysis  # type: ignore[method-assign]
    notifier.failures = {2: TransientError("Telegram: 502")}
    run_once(app, at(0))
    (call,) = calls()
    assert call.stage == "notifying" and len(own_parts(call)) >= 2 and own_ids(call) == [1]
    run_once(app, at(5))
    assert calls()[0].stage == "notified"
    assert notifier.sent == own_parts(calls()[0]), "every part exactly once, in order"


def test_permanent_error_fails_the_call_and_others_go_on(app: App, rig: Rig) -> None:
    source, transcriber = rig.source, rig.transcriber
    source.add(event(1), note(101))
    source.add(event(2), note(102))
    transcriber.failures = [PermanentError("audio undecodable")]
    run_once(app, at(0), workers=1)  # one worker: the failure goes to the oldest call, not to a racing one
    assert [c.stage for c in calls()] == ["failed", "notified"]
    assert calls()[0].last_error == "audio undecodable"


def test_transient_failures_give_up_after_24_hours(app: App, rig: Rig) -> None:
    source, recordings = rig.source, rig.recordings
    source.add(event(1), note(101))
    recordings.failures = [TransientError("HTTP 404")] * 100
    poller = app.config.poller.model_copy(update={"max_attempts": 1000})  # only the 24 h limit here
    app.config = app.config.model_copy(update={"poller": poller})
    minute = 0.0
    while calls() == [] or calls()[0].stage == "ready":
        run_once(app, at(minute))
        minute += 30
        assert minute < 26 * 60
    assert calls()[0].stage == "failed"
    assert (calls()[0].last_error or "").startswith("gave up after 24 h: HTTP 404")
    assert 24 * 60 <= minute <= 25 * 60 + 30


def test_a_link_that_appears_later_is_picked_up(app: App, rig: Rig) -> None:
    source = rig.source
    source.add(event(1), note(101, link=None))
    run_once(app, at(0))
    assert calls()[0].stage == "new" and calls()[0].next_attempt_at == ts(0) + 60
    source.notes[("leads", 101)] = note(101)
    run_once(app, at(2))
    assert calls()[0].stage == "notified"


def test_fatal_error_stops_the_cycle_without_touching_calls(app: App, rig: Rig) -> None:
    source, notifier = rig.source, rig.notifier
    source.add(event(1), note(101))
    notifier.failures = {1: FatalError("Telegram: chat not found")}
    with pytest.raises(FatalError):
        run_once(app, at(0))
    (call,) = calls()
    assert (call.stage, call.attempts, call.last_error) == ("notifying", 0, None)
    run_once(app, at(1))
    assert calls()[0].stage == "notified" and len(notifier.sent) == 1


def test_amocrm_outage_still_processes_recorded_calls(app: App, rig: Rig) -> None:
    source = rig.source
    source.add(event(1), note(101))
    run_once(app, at(0))
    source.add(event(2, minutes=0.5), note(102))
    source.fail_events = [TransientError("amoCRM GET /api/v4/events: HTTP 503")]
    cycle = run_once(app, at(1))
    assert cycle.poll_error and app.store.cursor() == ts(0) - 5, "the cursor waits for the events"
    run_once(app, at(2))
    assert [c.stage for c in calls()] == ["notified", "notified"]
