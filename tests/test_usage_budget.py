"""Usage and cost: stored once per transcription, shown by `status`, and the daily budget
makes new transcriptions wait (not fail) until the next UTC day. Also: the roles and the
metrics travel from the transcript to the analysis prompt and the Telegram card."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from salesbot_poller.cli.commands import status
from salesbot_poller.domain import CallEvent, CallNote, ConversationMetrics, Segment, Stage, Transcript, UploadMeter
from salesbot_poller.lanes import run_once
from salesbot_poller.pipeline.context import call_context
from salesbot_poller.services.analysis import build_user_message
from salesbot_poller.store import MIGRATIONS, Call, Migration, Store, Usage
from tests.builder import Rig, build_rig
from tests.memory import MemoryTranscriber

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
MIDNIGHT = int(datetime(2026, 11, 26, tzinfo=UTC).timestamp())


@dataclass
class StereoTranscriber(MemoryTranscriber):
    """Ten minutes of a two-channel call, as the real transcriber would return it."""

    def transcribe(self, audio: Path, meter: UploadMeter | None = None, keep: Path | None = None) -> Transcript:
        self.calls.append(audio)
        segments = (
            Segment(0.0, 20.0, "Добрый день, компания Ромашка. Чем помочь?", "left"),
            Segment(21.0, 60.0, "Хочу узнать цену.", "right"),
            Segment(61.0, 90.0, "Какой у вас объём?", "left"),
        )
        return Transcript("…", 600.0, segments, True, "whisper-1", 600.0, 0, 0)


def make_rig(tmp_path: Path, **openai: Any) -> Rig:
    rig = build_rig(
        tmp_path,
        now=T0,
        transcriber=StereoTranscriber(),
        openai=openai,
        audio={"manager_channel_by_source": {"Sipuni": "right"}},
    )
    for n, widget in enumerate(["MangoOfficeWidget", "Sipuni", "MangoOfficeWidget"], start=1):
        rig.source.add(
            CallEvent(f"01EVENT{n:019d}", "in", "leads", 7000 + n, 100 + n, int(T0.timestamp()) - 600 + n),
            CallNote(100 + n, 600, "+79991234567", f"https://rec.example/{n}.mp3", 4, widget, 555, None),
        )
    return rig


def calls() -> list[Call]:
    return list(Call.select().order_by(Call.id))


def test_roles_by_source_and_metrics_reach_the_prompt_and_the_card(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    app = rig.app
    run_once(app, T0, workers=1)  # one worker: the first analysis and card are the first call's
    first, sipuni, _ = calls()
    # Timed segments: each line carries its time in the call (a quote on the card shows it).
    assert first.transcript.splitlines()[0] == "[00:00] Менеджер: Добрый день, компания Ромашка. Чем помочь?"
    assert sipuni.transcript.splitlines()[0].startswith("[00:00] Клиент: Добрый день"), "Sipuni puts the manager right"
    metrics = ConversationMetrics.model_validate_json(first.metrics_json)
    assert metrics.manager_questions == 2 and metrics.manager_share == pytest.approx(49 / 88)

    transcript, context = rig.analyzer.calls[0]
    assert context.metrics == metrics
    prompt = build_user_message(transcript, call_context(app, first))
    assert "Метрики разговора" in prompt and prompt.index("Метрики") < prompt.index("Расшифровка")
    assert "🗣 Менеджер 56% · Клиент 44%" in rig.notifier.sent[0]
    assert sorted((u.call_id, u.audio_seconds, u.model) for u in Usage.select()) == [
        (1, 600.0, "whisper-1"),
        (2, 600.0, "whisper-1"),
        (3, 600.0, "whisper-1"),
    ]


def test_the_daily_budget_makes_new_transcriptions_wait_until_the_next_day(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig(tmp_path, daily_budget_usd=0.05)  # one 10-minute call is $0.06
    app = rig.app
    caplog.set_level(logging.WARNING, logger="salesbot_poller")
    # One worker: which call the budget lets through is the oldest, not the first of racing threads.
    run_once(app, T0, workers=1)
    assert [c.stage for c in calls()] == [Stage.NOTIFIED, Stage.DOWNLOADED, Stage.DOWNLOADED]
    assert [(c.next_attempt_at, c.attempts, c.last_error) for c in calls()[1:]] == [(MIDNIGHT, 0, None)] * 2
    run_once(app, T0 + timedelta(hours=14, minutes=59), workers=1)  # 23:59: still today
    budget_lines = [r for r in caplog.records if "daily OpenAI budget reached" in r.getMessage()]
    assert len(budget_lines) == 1, "one clear line, not one per call or per cycle"
    assert "openai.daily_budget_usd=$0.05" in budget_lines[0].getMessage()
    assert len(rig.transcriber.calls) == 1

    run_once(app, datetime(2026, 11, 26, 0, 1, tzinfo=UTC), workers=1)
    assert [c.stage for c in calls()] == [Stage.NOTIFIED, Stage.NOTIFIED, Stage.DOWNLOADED]
    assert calls()[2].next_attempt_at == MIDNIGHT + 86400


def test_status_shows_today_and_this_month_with_estimated_cost(tmp_path: Path) -> None:
    app = make_rig(
        tmp_path,
        daily_budget_usd=1.0,
        input_token_price_per_million_usd=2.5,
        output_token_price_per_million_usd=10.0,
    ).app
    now = int(T0.timestamp())
    Usage.create(call_id=1, at=now - 3600, kind="transcription", model="whisper-1", audio_seconds=600)
    Usage.create(
        call_id=2,
        at=now - 5 * 86400,
        kind="transcription",
        model="gpt-4o-transcribe",
        audio_seconds=120,
        input_tokens=400_000,
        output_tokens=100_000,
    )
    Usage.create(
        call_id=2, at=now - 5 * 86400, kind="analysis", model="gpt-4o-mini", input_tokens=400_000, output_tokens=100_000
    )
    Usage.create(call_id=3, at=now - 40 * 86400, kind="transcription", model="whisper-1", audio_seconds=6000)
    lines: list[str] = []
    status(app.store, lines.append, app.config, now)
    text = "\n".join(lines)
    assert "today       10.0 audio min, 0 tokens in, 0 tokens out, $0.06 (1 requests)" in text
    # 12 min x $0.006 (a transcription is priced per minute, its tokens with it) + the analysis'
    # 0.4 M x $2.50 + 0.1 M x $10 (the configured prices, over gpt-4o-mini's) = $2.07
    assert "this month  12.0 audio min, 800000 tokens in, 200000 tokens out, $2.07 (3 requests)" in text
    assert "daily budget $1.00: ok" in text


def test_a_database_of_the_previous_schema_gets_the_usage_table_and_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    store = Store.open(url, 1)
    store.db.execute_sql('ALTER TABLE "call" DROP COLUMN metrics_json')
    store.db.drop_tables([Usage])
    Migration.delete().where(Migration.name == "0005_audio_usage").execute()
    store.close()
    again = Store.open(url, 2)
    assert "metrics_json" in {c.name for c in again.db.get_columns("call")}
    assert again.db.table_exists("usage")
    assert [m.name for m in Migration.select().order_by(Migration.name)] == [n for n, _ in MIGRATIONS]
    again.close()
