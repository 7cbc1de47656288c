"""A `Rig` (tests/builder.py) for delivery tests: the real store, the real Telegram notifier
against the fake Bot API, the real amoCRM client (for writes) against the fake amoCRM, and
in-memory call source, recordings, transcriber and analyzer so each test sets the calls and
the time."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from salesbot_poller.domain import CallEvent, CallNote
from salesbot_poller.services.throttle import ChatPacer
from salesbot_poller.store import Call
from tests.builder import T0, Rig, build_rig
from tests.conftest import Servers

IVAN, MARIA = 555, 556


def ts(minutes: float) -> int:
    return int((T0 + timedelta(minutes=minutes)).timestamp())


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def loopback_rig(servers: Servers, dry_run: list[str] | None = None, *, paced: bool = True, **sections: Any) -> Rig:
    """`sections` are merged into the loopback config, e.g. `telegram={"routes": {...}}`.
    Telegram's real per-chat pacing (one message a second per chat) is kept unless `paced` is
    False, for a test that sends many messages to one chat and is not about the pacing."""
    return build_rig(
        servers.config_text(),
        real_notifier=True,
        real_crm=True,
        users={IVAN: "Иван Петров", MARIA: "Мария Сидорова"},
        dry_run=dry_run,
        pacer=ChatPacer() if paced else None,
        **sections,
    )


def add_call(
    rig: Rig,
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
    link = None if duration == 0 else f"https://rec.example/{n}.mp3"
    event = CallEvent(f"01EVENT{n:019d}", direction, entity, 7000 + n, 100 + n, ts(minutes))  # type: ignore[arg-type]
    note = CallNote(100 + n, duration, phone, link, status, "MangoOfficeWidget", user, None)
    rig.source.add(event, note, name=f"ООО Ромашка-{n}")


def calls() -> list[Call]:
    return list(Call.select().order_by(Call.id))
