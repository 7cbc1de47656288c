"""`salesbot-poller demo` (without --weekly): one real poll cycle against the built-in sandbox servers.

Contract: `run_demo(out)` starts the amoCRM, OpenAI and Telegram sandboxes on 127.0.0.1,
builds the app with the real composition root (`app.build_app`) and a database in a
temporary directory, runs `pipeline.run_once`, prints each Telegram message the sandbox
received as the chat would show it, and removes the directory. No config, no network, no
credentials. Returns 0 when the cycle delivered the card and the missed-call alert, else 1.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from salesbot_poller.app import build_app
from salesbot_poller.config import parse_config
from salesbot_poller.lanes import run_once
from salesbot_poller.sandbox import SandboxAmoCRM, SandboxOpenAI, SandboxTelegram
from salesbot_poller.sandbox.canned import CALLS
from salesbot_poller.services.telegram_text import plain_text

log = logging.getLogger(__name__)

# Stand-in credentials: they only ever reach the sandboxes on 127.0.0.1.
AMO_TOKEN = "demo-amocrm-token"
OPENAI_KEY = "sk-demo-key"
BOT_TOKEN = "100000001:DEMO-bot-token"
CHAT_ID = "-1001000000001"


# The canned transcript names a competitor: the demos show a tracker's alert and card lines.
DEMO_TRACKERS: list[dict[str, Any]] = [
    {"name": "Конкурент", "phrases": ["у конкурентов дешевле"], "alert": True},
    {"name": "Запись разговора", "phrases": ["разговор записывается"], "speaker": "manager", "expect": True},
]


def demo_config(tmp: Path, amo: SandboxAmoCRM, ai: SandboxOpenAI, tg: SandboxTelegram) -> dict[str, Any]:
    """The TOML document the demo would have in /etc/salesbot/config.toml."""
    return {
        "amocrm": {"base_url": amo.base_url, "long_lived_token": AMO_TOKEN},
        "openai": {"api_key": OPENAI_KEY, "base_url": f"{ai.base_url}/v1"},
        "telegram": {"bot_token": BOT_TOKEN, "chat_id": CHAT_ID, "api_url": tg.base_url},
        "poller": {"initial_lookback_minutes": 60},
        "trackers": DEMO_TRACKERS,
        "storage": {
            "database": f"sqlite:///{tmp}/salesbot.db",
            "audio_dir": str(tmp / "audio"),
            "allow_private_recording_hosts": True,  # the recording sandbox is on 127.0.0.1
        },
    }


def run_demo(out: Callable[[str], None], clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> int:
    now = clock()
    out("SalesBot Poller demo: one real poll cycle against sandbox amoCRM, OpenAI and Telegram servers")
    out("on 127.0.0.1 (no network, no credentials, a temporary database).")
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="salesbot-demo-")))
        amo = stack.enter_context(SandboxAmoCRM(AMO_TOKEN, int(now.timestamp())))
        ai = stack.enter_context(SandboxOpenAI(OPENAI_KEY))
        tg = stack.enter_context(SandboxTelegram(BOT_TOKEN, CHAT_ID))
        # An empty environment: the admin's SALESBOT_* variables must not reach the sandboxes.
        config = parse_config(demo_config(tmp, amo, ai, tg), environ={})
        app = build_app(config, clock)
        stack.callback(app.store.close)
        out(f"amoCRM sandbox: {len(CALLS)} call events (an answered call with a generated WAV recording,")
        out("a missed incoming call); OpenAI sandbox: a canned Russian transcript and analysis.")
        out("")
        cycle = run_once(app, now)
        out(
            f"cycle: events={cycle.events} new={cycle.new} transcribed={cycle.transcribed} "
            f"notified={cycle.notified} missed_alerts={cycle.alerted} failed={cycle.failed}"
        )
        for number, message in enumerate(tg.messages, 1):
            out("")
            out(f"── Telegram message {number} of {len(tg.messages)} (chat {message.get('chat_id')}) ──")
            out(plain_text(message.get("text", "")))
        delivered = cycle.notified == 1 and cycle.alerted == 1 and cycle.failed == 0
    out("")
    if not delivered:
        out("demo: the cycle did not deliver both messages; see the log lines above")
        return 1
    out("This is what the bot posts. Next: configure it for real (docs/quickstart.md).")
    return 0
