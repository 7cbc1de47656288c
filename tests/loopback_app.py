"""An `App` for delivery tests: the real store, the real Telegram notifier against the fake
Bot API, the real amoCRM client (for writes) against the fake amoCRM, and in-memory call
source, recordings, transcriber and analyzer so each test sets the calls and the time."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from salesbot_poller.app import build_amo, build_notifier
from salesbot_poller.config import parse_config
from salesbot_poller.domain import CallEvent, CallNote
from salesbot_poller.pipeline.context import App
from salesbot_poller.pipeline.delivery import DryRun
from salesbot_poller.store import Call, Store
from tests.conftest import Servers
from tests.memory import MemoryAnalyzer, MemoryRecordings, MemorySource, MemoryTranscriber

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
IVAN, MARIA = 555, 556


def ts(minutes: float) -> int:
    return int((T0 + timedelta(minutes=minutes)).timestamp())


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def make_app(servers: Servers, dry_run: list[str] | None = None, **sections: dict[str, Any]) -> App:
    """`sections` are merged into the loopback config, e.g. `telegram={"routes": {...}}`."""
    raw = tomllib.loads(servers.config_text())
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    config = parse_config(raw, {})
    audio = Path(config.storage.audio_dir)
    audio.mkdir(parents=True, exist_ok=True)
    store = Store.open(config.storage.database, ts(0))
    return App(
        config=config,
        store=store,
        source=MemorySource(users={IVAN: "Иван Петров", MARIA: "Мария Сидорова"}),
        recordings=MemoryRecordings(audio),
        transcriber=MemoryTranscriber(),
        analyzer=MemoryAnalyzer(),
        notifier=build_notifier(config),
        tz=UTC,
        crm=build_amo(config, store, lambda: T0),
        dry_run=DryRun(dry_run.append) if dry_run is not None else None,
    )


def add_call(
    app: App,
    n: int,
    *,
    minutes: float = -10,
    direction: str = "in",
    duration: int = 125,
    status: int = 4,
    user: int = IVAN,
    phone: str = "+7 (999) 123-45-67",
    entity: str = "leads",
) -> None:
    source = app.source
    assert isinstance(source, MemorySource)
    link = None if duration == 0 else f"https://rec.example/{n}.mp3"
    event = CallEvent(f"01EVENT{n:019d}", direction, entity, 7000 + n, 100 + n, ts(minutes))  # type: ignore[arg-type]
    note = CallNote(100 + n, duration, phone, link, status, "MangoOfficeWidget", user, None)
    source.add(event, note, name=f"ООО Ромашка-{n}")


def calls() -> list[Call]:
    return list(Call.select().order_by(Call.id))
