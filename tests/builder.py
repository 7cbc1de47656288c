"""The one way tests (and benchmarks) build an `App` around the in-memory fakes of
tests/memory.py: `build_rig` returns a `Rig`, the App together with its fakes, typed, so a
test reaches `rig.source`, `rig.notifier`, ... without narrowing `app.source` itself.

Options say which parts are the real clients instead of fakes, built by the composition
root (`salesbot_poller.app`) against the config's URLs (the loopback servers):
- `real_source`: the amoCRM client reads the calls (then `rig.source` is not there);
- `real_notifier`: the Telegram client sends (then `rig.notifier` is not there);
- `real_crm`: the amoCRM client writes notes and tasks (`amocrm.write_back`).
Recordings, transcriber and analyzer are always the fakes. Telegram's per-chat pacing is off
unless a `pacer` is given (`ChatPacer()` for the real one).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from salesbot_poller.app import build_amo, build_notifier
from salesbot_poller.config import parse_config
from salesbot_poller.domain import CallSource, Notifier
from salesbot_poller.pipeline import catchup
from salesbot_poller.pipeline.context import App
from salesbot_poller.pipeline.delivery import DryRun
from salesbot_poller.services.throttle import ChatPacer
from salesbot_poller.store import Store
from salesbot_poller.store.base import CURSOR_KEY
from tests.memory import MemoryAnalyzer, MemoryNotifier, MemoryRecordings, MemorySource, MemoryTranscriber

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def offline_config(home: Path) -> dict[str, dict[str, Any]]:
    """A minimal config that reaches nothing; the database and audio are kept under `home`."""
    return {
        "amocrm": {"base_url": "https://acme.amocrm.ru", "long_lived_token": "amo-token"},
        "openai": {"api_key": "sk-key"},
        "telegram": {"bot_token": "123:TEST", "chat_id": "-100"},
        "storage": {"database": f"sqlite:///{home}/db.sqlite", "audio_dir": str(home / "audio")},
    }


@dataclass
class Rig:
    """An `App` and the fakes it was built with (see the module docstring)."""

    app: App
    recordings: MemoryRecordings
    transcriber: MemoryTranscriber
    analyzer: MemoryAnalyzer
    memory_source: MemorySource | None
    memory_notifier: MemoryNotifier | None

    @property
    def source(self) -> MemorySource:
        if self.memory_source is None:
            raise AttributeError("this rig reads calls with the real amoCRM client: see rig.app.source")
        return self.memory_source

    @property
    def notifier(self) -> MemoryNotifier:
        if self.memory_notifier is None:
            raise AttributeError("this rig sends with the real Telegram client: see rig.app.notifier")
        return self.memory_notifier


def build_rig(
    where: Path | str,
    *,
    real_source: bool = False,
    real_notifier: bool = False,
    real_crm: bool = False,
    now: datetime = T0,
    users: dict[int, str] | None = None,
    transcriber: MemoryTranscriber | None = None,
    notifier: MemoryNotifier | None = None,
    tz: tzinfo | None = UTC,
    dry_run: list[str] | None = None,
    pacer: ChatPacer | None = None,
    **sections: dict[str, Any],
) -> Rig:
    """An `App` with a fresh store opened at `now`, and its fakes.

    `where`: a directory (`offline_config` there) or a config's TOML text (e.g.
    `servers.config_text()`); each of `sections` is merged into that config's section of the
    same name, e.g. `telegram={"alert_chat_id": "-100"}`. `users`: the source's amoCRM user
    names (default: user 555, Иван Петров). `transcriber`, `notifier`: fakes of one's own
    (subclasses of the memory fakes).
    `dry_run`: collect the dry run's printed lines there. `pacer`: None sends without
    Telegram's per-chat pacing (nothing waits); pass `ChatPacer()` to keep the real pacing.
    """
    raw = offline_config(where) if isinstance(where, Path) else tomllib.loads(where)
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    config = parse_config(raw, {})
    audio = Path(config.storage.audio_dir)
    audio.mkdir(parents=True, exist_ok=True)
    store = Store.open(config.storage.database, int(now.timestamp()))
    amo = build_amo(config, store, lambda: now) if real_source or real_crm else None  # one, as the app has
    memory_source = None if real_source else MemorySource(users={555: "Иван Петров"} if users is None else users)
    memory_notifier = None if real_notifier else notifier or MemoryNotifier()
    source: CallSource | None = amo if memory_source is None else memory_source
    sender: Notifier = build_notifier(config) if memory_notifier is None else memory_notifier
    assert source is not None
    recordings, analyzer = MemoryRecordings(audio), MemoryAnalyzer()
    transcriber = transcriber or MemoryTranscriber()
    app = App(
        config=config,
        store=store,
        source=source,
        recordings=recordings,
        transcriber=transcriber,
        analyzer=analyzer,
        notifier=sender,
        tz=tz,
        crm=amo if real_crm else None,
        dry_run=DryRun(dry_run.append) if dry_run is not None else None,
        pacer=pacer or ChatPacer(gap=0, group_per_minute=10**9),
    )
    return Rig(app, recordings, transcriber, analyzer, memory_source, memory_notifier)


def already_running(app: App, since: datetime = T0 - timedelta(hours=2)) -> None:
    """Make `app`'s fresh database one of a daemon that first started at `since` and has polled
    up to then (its cursor), as if it had run with nothing to say: the calls a test adds after
    `since` are alerted one by one, as a running daemon does, not summarised as the first
    start's look-back (`pipeline.catchup`)."""
    moment = str(int(since.timestamp()))
    app.store.set_state(catchup.FIRST_START_KEY, moment)
    app.store.set_state(CURSOR_KEY, moment)


def database_already_running(url: str, since: int) -> None:
    """`already_running` for the database at `url` that a command (`once`) opens: migrated, a
    daemon's first start and cursor at `since` (a Unix time)."""
    store = Store.open(url, since)
    try:
        store.set_state(catchup.FIRST_START_KEY, str(since))
        store.set_state(CURSOR_KEY, str(since))
    finally:
        store.close()
