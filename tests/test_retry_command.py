# ruff: noqa: F811  (the `app` and `rig` fixtures are imported from test_pipeline_unit and named as parameters)
"""Failing calls: `poller.max_attempts`, `retry CALL_ID` / `retry --failed`, `status`'s list
of failures, and the small crash-safety rules (stop between stages, keep_audio, a database
error is an error). In-memory services, a real SQLite store, time passed in."""

from __future__ import annotations

from pathlib import Path

import peewee
import pytest

from salesbot_poller.cli import commands
from salesbot_poller.domain import Planned
from salesbot_poller.errors import PermanentError, TransientError
from salesbot_poller.lanes import run_once
from salesbot_poller.pipeline.context import App
from salesbot_poller.store import Call
from tests.builder import Rig
from tests.conftest import BOT_TOKEN, Servers, assert_no_secret, run_cli
from tests.test_pipeline_unit import app, at, calls, event, note, rig, ts  # noqa: F401


def with_settings(app: App, section: str, **values: object) -> None:
    part = getattr(app.config, section).model_copy(update=values)
    app.config = app.config.model_copy(update={section: part})


def test_a_call_fails_after_max_attempts_with_its_last_error(app: App, rig: Rig) -> None:
    source, recordings = rig.source, rig.recordings
    with_settings(app, "poller", max_attempts=3)
    source.add(event(1), note(101))
    recordings.failures = [TransientError("HTTP 500"), TransientError("HTTP 502"), TransientError("HTTP 503")]
    for minute in (0, 2, 10):
        run_once(app, at(minute))
    (call,) = calls()
    assert (call.stage, call.attempts) == ("failed", 3)
    assert call.last_error == "gave up after 3 attempts: HTTP 503"


def test_waiting_for_a_recording_link_is_not_a_failed_attempt(app: App, rig: Rig) -> None:
    source = rig.source
    with_settings(app, "poller", max_attempts=2)
    source.add(event(1), note(101, link=None))
    for minute in (0, 2, 10, 30):
        run_once(app, at(minute))
    assert calls()[0].stage == "new", "still waiting for the link, not failed"


def fail_after_transcription(rig: Rig) -> None:
    source, analyzer = rig.source, rig.analyzer
    source.add(event(1), note(101))
    source.add(event(2), note(102))
    analyzer.failures = [PermanentError("analysis model refused: nope")]
    run_once(rig.app, at(0), workers=1)  # one worker: the failure goes to the oldest call, not to a racing one
    assert [c.stage for c in calls()] == ["failed", "notified"]


def test_retry_resumes_a_failed_call_at_its_stage_and_never_repays(app: App, rig: Rig) -> None:
    transcriber, notifier = rig.transcriber, rig.notifier
    fail_after_transcription(rig)
    failed = calls()[0]
    assert app.store.resume_stage(failed).value == "transcribed"
    lines: list[str] = []
    assert commands.retry(app.store, [failed.id], False, ts(5), lines.append)
    assert lines == [f"call {failed.id} (leads/7001): requeued at transcribed"]
    requeued = calls()[0]
    assert (requeued.stage, requeued.attempts, requeued.next_attempt_at, requeued.retried_at) == (
        "transcribed",
        0,
        ts(5),
        ts(5),
    )
    run_once(app, at(6))
    assert [c.stage for c in calls()] == ["notified", "notified"]
    assert len(transcriber.calls) == 2, "one transcription per call: the failed one was not paid twice"
    assert len(notifier.sent) == 2


def test_retry_restarts_the_24_hour_window(app: App, rig: Rig) -> None:
    source, recordings = rig.source, rig.recordings
    source.add(event(1), note(101))
    recordings.failures = [PermanentError("recording link is not an http(s) URL")]
    run_once(app, at(0))
    assert calls()[0].stage == "failed"
    commands.retry(app.store, [], True, ts(25 * 60), lambda line: None)
    recordings.failures = [TransientError("HTTP 404")]
    run_once(app, at(25 * 60))  # a day after it was first seen: a transient error is retried
    assert (calls()[0].stage, calls()[0].attempts) == ("ready", 1)
    run_once(app, at(25 * 60 + 5))
    assert calls()[0].stage == "notified"


def test_retry_of_an_unknown_or_unfailed_call_says_so_and_fails(app: App, rig: Rig) -> None:
    fail_after_transcription(rig)
    lines: list[str] = []
    assert not commands.retry(app.store, [999, 2], False, ts(5), lines.append)
    assert lines == [
        "call 999: no such call (see `salesbot-poller status`)",
        "call 2: not failed (stage notified): nothing to retry",
    ]
    assert calls()[0].stage == "failed", "nothing else is touched"
    lines.clear()
    assert commands.retry(app.store, [], True, ts(5), lines.append)
    assert lines == ["call 1 (leads/7001): requeued at transcribed"]
    lines.clear()
    assert commands.retry(app.store, [], True, ts(6), lines.append) and lines == ["no failed calls"]


def test_status_lists_failures_with_stage_error_and_time(app: App, rig: Rig) -> None:
    fail_after_transcription(rig)
    lines: list[str] = []
    utc = app.config.model_copy(update={"amocrm": app.config.amocrm.model_copy(update={"timezone": "UTC"})})
    commands.status(app.store, lines.append, utc)
    assert "failed calls: 1 (`salesbot-poller retry --failed` puts them back)" in lines
    assert (
        "  call 1 (leads/7001), reached transcribed, failed 2026-11-25 09:00 UTC after 1 attempt(s): "
        "analysis model refused: nope"
    ) in lines


@pytest.mark.parametrize(
    ("fields", "stage"),
    [
        ({}, "new"),
        ({"kind": "conversation"}, "ready"),
        ({"kind": "conversation", "audio_path": "/x.mp3"}, "downloaded"),
        ({"kind": "conversation", "audio_path": "/x.mp3", "transcript": ""}, "transcribed"),
        ({"kind": "conversation", "transcript": "t", "analysis_json": "{}"}, "analysed"),
        ({"kind": "missed"}, "missed"),
        ({"kind": "missed", "own_message": "alert"}, "notifying"),
        ({"kind": "conversation", "analysis_json": "{}", "own_message": "card"}, "notifying"),
    ],
)
def test_resume_stage_is_the_first_stage_without_a_stored_result(app: App, fields: dict[str, str], stage: str) -> None:
    kind = fields.pop("own_message", None)
    call = Call.create(
        event_id="e1",
        direction="in",
        entity_type="leads",
        entity_id=1,
        note_id=1,
        event_created_at=ts(0),
        first_seen_at=ts(0),
        updated_at=ts(0),
        **fields,
    )
    if kind:  # its own message is rendered: it resumes at sending what is left of it
        app.store.enqueue([Planned(f"call:{call.id}", kind, None, {"parts": ["a"]})], call.id, ts(0))
    assert app.store.resume_stage(call).value == stage


def test_keep_audio_keeps_the_recording_after_the_transcript(app: App, rig: Rig) -> None:
    source = rig.source
    with_settings(app, "storage", keep_audio=True)
    source.add(event(1), note(101))
    run_once(app, at(0))
    assert calls()[0].stage == "notified"
    assert [p.name for p in Path(app.config.storage.audio_dir).iterdir()] == ["call-1.mp3"]


def test_a_stop_request_takes_no_new_stage(app: App, rig: Rig) -> None:
    source, transcriber = rig.source, rig.transcriber
    source.add(event(1), note(101))
    source.add(event(2), note(102))

    def should_stop() -> bool:  # yes once a stage has been committed
        return any(c.stage == "downloaded" for c in calls())

    run_once(app, at(0), should_stop, workers=1)
    assert [c.stage for c in calls()] == ["downloaded", "ready"], "one stage committed, then stopped"
    assert transcriber.calls == []
    run_once(app, at(1))
    assert [c.stage for c in calls()] == ["notified", "notified"]


def test_a_database_error_is_an_error_not_already_processed(
    app: App, rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, notifier = rig.source, rig.notifier
    source.add(event(1), note(101))
    real_update = app.store.update

    def update(call: Call, now: int, **fields: object) -> None:
        if fields.get("stage") == "transcribed" or getattr(fields.get("stage"), "value", "") == "transcribed":
            raise peewee.OperationalError("disk I/O error")  # not "locked": that one is waited out (10 min)
        real_update(call, now, **fields)

    monkeypatch.setattr(app.store, "update", update)
    with pytest.raises(peewee.OperationalError):
        run_once(app, at(0))
    monkeypatch.undo()
    assert (calls()[0].stage, calls()[0].last_error) == ("downloaded", None), "not marked anything"
    run_once(app, at(1))
    assert calls()[0].stage == "notified" and len(notifier.sent) == 1


def test_a_database_from_before_retry_is_migrated_and_keeps_its_calls(tmp_path: Path) -> None:
    from salesbot_poller.store import Migration, Store

    url = f"sqlite:///{tmp_path}/old.db"
    store = Store.open(url, 1)
    Call.create(
        event_id="e1", direction="in", entity_type="leads", entity_id=1, note_id=1,
        event_created_at=0, first_seen_at=0, updated_at=0, stage="failed",
    )  # fmt: skip
    store.db.execute_sql('ALTER TABLE "call" DROP COLUMN "retried_at"')  # the 0001 schema
    Migration.delete().where(Migration.name == "0004_retry").execute()
    store.close()
    again = Store.open(url, 2)
    try:
        assert "retried_at" in [c.name for c in again.db.get_columns("call")]
        assert [(c.event_id, c.retried_at) for c in Call.select()] == [("e1", None)]
    finally:
        again.close()


def test_retry_on_the_command_line(servers: Servers) -> None:
    from salesbot_poller.store import Store

    config = servers.write_config()
    servers.amo.add_call(
        entity_id=7001, note_id=1, duration=60, phone="+79990000001", link="ftp://pbx/1.mp3", created_at=0
    )
    store = Store.open(f"sqlite:///{servers.tmp}/state/salesbot.db", 0)
    store.record_window([], [], until=0, now=0)
    Call.create(
        event_id="e1",
        direction="in",
        entity_type="leads",
        entity_id=7001,
        note_id=1,
        event_created_at=0,
        first_seen_at=0,
        updated_at=0,
        stage="failed",
        kind="conversation",
        attempts=8,
        transcript="Добрый день",
        last_error=f"unexpected ValueError: /bot{BOT_TOKEN}/sendMessage",
    )
    store.close()
    status = run_cli("status", config=config)
    assert "call 1 (leads/7001), reached transcribed" in status.stdout and "/bot***/" in status.stdout
    unknown = run_cli("retry", "42", config=config)
    assert unknown.returncode == 1 and unknown.stdout.strip() == "call 42: no such call (see `salesbot-poller status`)"
    retried = run_cli("retry", "1", config=config)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == "call 1 (leads/7001): requeued at transcribed"
    assert_no_secret(status.stdout, unknown.stdout, retried.stdout, retried.stderr)


def test_files_left_by_a_crash_are_swept_but_not_a_recording_still_waiting(app: App, rig: Rig) -> None:
    source, transcriber = rig.source, rig.transcriber
    audio = Path(app.config.storage.audio_dir)
    source.add(event(1), note(101))
    transcriber.failures = [TransientError("OpenAI transcription: HTTP 503")]
    run_once(app, at(0))
    assert calls()[0].stage == "downloaded"
    (audio / "call-7.part").write_bytes(b"ID3 half")  # killed mid-download
    (audio / "call-8.mp3").write_bytes(b"ID3 done")  # killed after its transcript was stored
    (audio / "call-8.mp3.pieces.json").write_text("{}")  # ... and the chunks it had paid for
    (audio / "call-1.mp3.pieces.json").write_text("{}")  # chunks paid for by the waiting call: kept
    (audio / "call-1-abc123").mkdir()  # the preparation directory of a killed transcription
    (audio / "call-1-abc123" / "call-000.ogg").write_bytes(b"OggS")
    (audio / "notes.txt").write_text("not ours")
    run_once(app, at(0.5))  # the call is not due yet: only the sweep acts
    assert sorted(p.name for p in audio.iterdir()) == ["call-1.mp3", "call-1.mp3.pieces.json", "notes.txt"]
    (audio / "call-1.mp3.pieces.json").unlink()  # the memory transcriber keeps no pieces
    run_once(app, at(2))
    assert calls()[0].stage == "notified" and sorted(p.name for p in audio.iterdir()) == ["notes.txt"]
