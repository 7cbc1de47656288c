"""Measure the duplicate window: from Telegram accepting a message to our commit of its id.

A crash inside this window is the one way a card reaches Telegram twice (see docs/how-a-call-moves.md,
"Delivery guarantees"). It opens when the sendMessage request leaves (from then on Telegram
may post the message whether or not we live to read its answer) and closes when the message
id is committed:
  1. request sent -> Telegram accepts: the request travelling and Telegram storing it;
  2. accept -> answer in hand: the answer travelling back and telebot parsing it;
  3. answer -> committed: the SQLite commit of the message id (WAL; synchronous=full, as the
     store uses, and normal for comparison).
Against a loopback server 1 and 2 are tiny; in production they are one round trip to
api.telegram.org.

Run from the repository root:  .venv/bin/python benchmarks/duplicate_window.py [N]
It drives the real work lane (`lanes.drain`, one worker, the `notify` stage), the real
TelegramNotifier (pyTelegramBotAPI over HTTP) against the loopback FakeTelegram, and the real
Store on a file in a temporary dir.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salesbot_poller.domain import Destination, Keyboard, Planned, Stage
from salesbot_poller.lanes import drain
from salesbot_poller.store import Call, Delivery
from tests.builder import build_rig
from tests.fakes import FakeTelegram

TOKEN = "123456:BENCH"
CHAT = "-1001234567890"


def main(n: int, synchronous: str) -> None:
    telegram = FakeTelegram(token=TOKEN).start()
    started: list[float] = []
    accepted: list[float] = []
    returned: list[float] = []
    committed: list[float] = []
    send_message = telegram._send_message

    def timed_send(params: dict[str, str], files: dict[str, Any]) -> Any:
        reply = send_message(params, files)
        accepted.append(time.perf_counter())  # stored: Telegram has accepted it
        return reply

    telegram._send_message = timed_send  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        # Telegram's per-chat pacing is left out (the builder's default): the window, not the
        # rate, is measured here.
        telegram_section = {"bot_token": TOKEN, "chat_id": CHAT, "api_url": telegram.base_url}
        rig = build_rig(Path(tmp), real_notifier=True, now=datetime.fromtimestamp(0, UTC), telegram=telegram_section)
        app, store, notifier = rig.app, rig.app.store, rig.app.notifier
        store.db.execute_sql(f"PRAGMA synchronous={synchronous}")  # type: ignore[no-untyped-call]  # vs the default
        send = notifier.send

        def timed_notifier_send(
            html: str, to: Destination | None = None, reply_to: int | None = None, keyboard: Keyboard | None = None
        ) -> int:
            started.append(time.perf_counter())
            message_id = send(html, to, reply_to, keyboard)
            returned.append(time.perf_counter())
            return message_id

        notifier.send = timed_notifier_send  # type: ignore[method-assign]
        update = store.update_delivery

        def timed_update(row: Delivery, **fields: Any) -> None:
            update(row, **fields)
            if "sent_ids_json" in fields and "done_at" not in fields:
                committed.append(time.perf_counter())

        store.update_delivery = timed_update  # type: ignore[method-assign]
        for i in range(n):
            call = Call.create(
                event_id=f"e{i}",
                direction="in",
                entity_type="leads",
                entity_id=i,
                note_id=i,
                event_created_at=0,
                first_seen_at=0,
                updated_at=0,
                stage=Stage.NOTIFYING.value,
                kind="conversation",
            )
            part = f"<b>Звонок {i}</b> · тест окна дубликатов"
            store.enqueue([Planned(f"call:{call.id}", "card", None, {"parts": [part]})], call.id, 0)
        drain(app, int(datetime.now(UTC).timestamp()), workers=1)
        store.close()
    telegram.stop()
    assert len(accepted) == len(returned) == len(committed) == n, (len(accepted), len(returned), len(committed))

    rows = [
        ("request sent -> accepted", [a - s for s, a in zip(started, accepted, strict=True)]),
        ("accept -> answer in hand", [r - a for a, r in zip(accepted, returned, strict=True)]),
        ("answer -> id committed", [c - r for r, c in zip(returned, committed, strict=True)]),
        ("accept -> committed", [c - a for a, c in zip(accepted, committed, strict=True)]),
        ("WINDOW: sent -> committed", [c - s for s, c in zip(started, committed, strict=True)]),
    ]
    print(f"duplicate window over {n} messages, SQLite WAL synchronous={synchronous} (ms)")
    print(f"| {'part':<30} | {'median':>7} | {'p90':>7} | {'p99':>7} | {'max':>7} |")
    print(f"|{'-' * 32}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    for name, values in rows:
        ms = sorted(v * 1000 for v in values)
        p90, p99 = ms[int(0.9 * (n - 1))], ms[int(0.99 * (n - 1))]
        print(f"| {name:<30} | {statistics.median(ms):7.2f} | {p90:7.2f} | {p99:7.2f} | {ms[-1]:7.2f} |")


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    for mode in ("full", "normal"):  # full is what the store uses
        main(count, mode)
        print()
