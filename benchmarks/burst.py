"""A burst of answered calls through the real daemon: how the work lane scales with
`poller.workers`, and whether a missed call's alert still goes out on time meanwhile.

Run from the repository root:  .venv/bin/python benchmarks/burst.py [--calls N] [--workers 1,2,4,8]
CI runs it small (`--calls 10`, .ci/run) so it cannot rot: it exits 1 when a row gives no
figure (a call not posted exactly once, no alert, a daemon not exiting 0), and when a target
is missed; targets are only judged from `TARGET_CALLS` calls up (fewer say too little).

Each row starts the real daemon process (`python -m salesbot_poller --config X run`, fresh
database) against the four loopback fakes on 127.0.0.1 (no internet): amoCRM enforcing its
7 requests/s, a recording host, OpenAI answering a transcription in 2 s and an analysis in
1.5 s, and Telegram. `poller.interval_seconds` = 2. Once the daemon has made its first poll,
N answered calls (each with a short generated MP3 recording) appear in amoCRM at once; 3 s
later one missed incoming call (duration 0) appears. `storage.allow_private_recording_hosts`
is on: the recording host is on 127.0.0.1, which the daemon refuses by default.

The last row ("stereo") is the same burst at `STEREO_WORKERS` workers where every call is a
10-minute stereo recording (one party per channel, as telephony records them; `--stereo-calls`
of them, at most `--calls`): each channel is transcribed on its own, so a call holds two
OpenAI slots at once, and OpenAI takes `STEREO_TRANSCRIBE_DELAY` per channel (10 minutes of
audio take longer than 3 seconds), while the worker's 10 minutes of audio are decoded and
encoded on this machine's CPU. The daemon is then left alone until
every card and the alert are in Telegram, and stopped with SIGTERM (it must exit 0).

Cards go where a real team's go: `telegram.routes` sends each of 10 managers' calls to that
manager's private chat (positive ids), the calls spread evenly over the managers, so
Telegram's per-chat limits (1 message/s a chat; the 20/min of a group chat does not apply)
do not dominate. The missed call's alert goes to its manager's chat, like that manager's cards.

Everything is measured from what the fakes recorded:
- "readable": the poller reads an event no sooner than `SETTLE_SECONDS` (5 s) after its
  `created_at` (intake's window ends that far in the past), so an event counts as readable
  at created_at + 5 s; every delay below starts there.
- last card: readable -> arrival of the last card's sendMessage; speed-up is workers=1's
  last card over this row's.
- p50 / p95: readable -> arrival of the call's card, over the burst's calls.
- alert: readable -> arrival of the missed call's sendMessage.
- violations: amoCRM requests beyond 7 in a rolling second (`FakeAmoCRM.rate_violations`).
- once: every call (and the alert) accepted by Telegram exactly once, and nothing else sent.
  Messages are matched to calls by the link to the call's lead (`.../detail/ID`, one lead
  per call): cards mask the caller's phone (`telegram.mask_phones`), so it names no call.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salesbot_poller.pipeline.intake import SETTLE_SECONDS
from tests.fakes import FakeAmoCRM, FakeOpenAI, FakeRecordings, FakeTelegram, make_mp3
from tests.fakes.base import form_params

ROOT = Path(__file__).resolve().parent.parent
AMO_TOKEN = "bench-amo-token"
OPENAI_KEY = "sk-bench-key"
BOT_TOKEN = "123456:BENCH-bot-token"
DEFAULT_CHAT = "-1001234567890"  # required by the config; every call here is routed elsewhere
MANAGERS = 10
MANAGER_IDS = [6_000_001 + n for n in range(MANAGERS)]
MANAGER_CHATS = {uid: str(700_000_001 + n) for n, uid in enumerate(MANAGER_IDS)}  # private chats
INTERVAL = 2
TRANSCRIBE_DELAY = 2.0
ANALYSIS_DELAY = 1.5
RECORDING_SECONDS = 3.0
MISSED_AFTER = 3.0  # seconds into the burst
MISSED_PHONE = "+79995550000"
FIRST_LEAD = 40_000_000  # call n's lead: FIRST_LEAD + n
MISSED_LEAD = 49_999_999
LEAD_LINK = re.compile(r"/detail/(\d+)\b")
STEREO_WORKERS = 8
STEREO_SECONDS = 600.0
STEREO_TRANSCRIBE_DELAY = 10.0  # per channel of a 10-minute call
TARGET_CALLS = 40  # fewer calls (CI's --calls 10) give figures, not a speed-up worth judging
SPEEDUP_TARGET = 3.5  # workers=4 over workers=1
ALERT_SLACK = 2.0  # an alert within interval + this


@dataclass
class Row:
    label: str
    workers: int
    calls: int
    last_card: float  # s, from readable
    p50: float
    p95: float
    alert: float
    violations: int
    once: bool
    extra: int  # messages not matched to a call
    exit_code: int | None

    @property
    def has_figure(self) -> bool:
        """Every card and the alert arrived, each once, and the daemon exited 0."""
        return math.isfinite(self.last_card) and math.isfinite(self.alert) and self.once and self.exit_code == 0


def phone(n: int) -> str:
    return f"+7999{n:07d}"


def owner(text: str) -> int | None:
    """The lead (so the call) a message links to; None for none."""
    found = LEAD_LINK.search(text)
    return int(found.group(1)) if found else None


def config_text(amo: str, tmp: Path, openai: str, telegram: str, workers: int, slots: int = 0) -> str:
    routes = "\n".join(f'[telegram.routes.{uid}]\nchat_id = "{chat}"' for uid, chat in MANAGER_CHATS.items())
    return f"""
[amocrm]
base_url = "{amo}"
long_lived_token = "{AMO_TOKEN}"
[openai]
api_key = "{OPENAI_KEY}"
base_url = "{openai}/v1"
max_concurrent_requests = {slots}
[telegram]
bot_token = "{BOT_TOKEN}"
chat_id = "{DEFAULT_CHAT}"
api_url = "{telegram}"
{routes}
[poller]
interval_seconds = {INTERVAL}
workers = {workers}
initial_lookback_minutes = 60
min_duration_seconds = 10
retry_delay_seconds = 60
[storage]
database = "sqlite:///{tmp}/state/salesbot.db"
audio_dir = "{tmp}/state/audio"
allow_private_recording_hosts = true  # the loopback recording host
"""


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            print(f"  gave up waiting for {what} after {timeout:.0f} s", file=sys.stderr)
            return False
        time.sleep(0.05)
    return True


def percentile(values: list[float], p: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def scenario(
    workers: int, calls: int, *, stereo: bool = False, stereo_seconds: float = STEREO_SECONDS, slots: int = 0
) -> Row:
    recording = make_mp3(stereo_seconds, stereo=True) if stereo else make_mp3(RECORDING_SECONDS)
    with (
        tempfile.TemporaryDirectory() as tmp_name,
        FakeAmoCRM(token=AMO_TOKEN) as amo,
        FakeRecordings() as recordings,
        FakeOpenAI(api_key=OPENAI_KEY) as openai,
        FakeTelegram(token=BOT_TOKEN) as telegram,
    ):
        tmp = Path(tmp_name)
        amo.enforce_rate_limit = True
        openai.transcribe_delay = STEREO_TRANSCRIBE_DELAY if stereo else TRANSCRIBE_DELAY
        openai.chat_delay = ANALYSIS_DELAY
        telegram.known_chats = {DEFAULT_CHAT, *MANAGER_CHATS.values()}
        for n, uid in enumerate(MANAGER_IDS):
            amo.add_user(uid, f"Менеджер {n + 1}")
        config = tmp / "config.toml"
        config.write_text(config_text(amo.base_url, tmp, openai.base_url, telegram.base_url, workers, slots))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SALESBOT_")}
        env |= {"PYTHONPATH": str(ROOT), "TZ": "UTC"}
        log_path = tmp / "daemon.log"
        with log_path.open("w") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "salesbot_poller", "--config", str(config), "run"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=ROOT,
            )
        exit_code: int | None = None
        try:
            wait_for(lambda: amo.count(r"/api/v4/events$") >= 1, 30, "the first poll")
            # The burst: every call appears at once, each with its own card, phone and recording.
            burst_at = int(time.time())
            with amo.lock:
                for n in range(calls):
                    uid = MANAGER_IDS[n % MANAGERS]
                    amo.add_entity("lead", FIRST_LEAD + n, f"Сделка {n}", responsible_user_id=uid)
                    amo.add_call(
                        entity_id=FIRST_LEAD + n,
                        note_id=1_300_000_000 + n,
                        duration=int(stereo_seconds) if stereo else 60,
                        phone=phone(n),
                        link=recordings.add(f"/rec/{n}.mp3", recording),
                        created_at=burst_at,
                        responsible_user_id=uid,
                    )
            time.sleep(MISSED_AFTER)
            missed_at = int(time.time())
            with amo.lock:
                amo.add_entity("lead", MISSED_LEAD, "Сделка пропущенного", responsible_user_id=MANAGER_IDS[0])
                amo.add_call(
                    entity_id=MISSED_LEAD,
                    note_id=1_399_999_999,
                    duration=0,
                    call_status=6,
                    phone=MISSED_PHONE,
                    link=None,
                    created_at=missed_at,
                    responsible_user_id=MANAGER_IDS[0],
                )
            # A 10-minute stereo call also takes ~10 CPU seconds here (decode and encode), on 2 cores.
            per_call = (STEREO_TRANSCRIBE_DELAY + 10.0 if stereo else TRANSCRIBE_DELAY) + ANALYSIS_DELAY
            budget = calls * per_call / min(workers, 2 if stereo else workers) * 2 + 60
            wait_for(lambda: len(telegram.messages) >= calls + 1, budget, f"{calls} cards and the alert")
            time.sleep(1.0)  # anything sent twice or extra would show up now
            daemon.send_signal(signal.SIGTERM)
            exit_code = daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            print("  the daemon did not exit within 30 s of SIGTERM", file=sys.stderr)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
        # Map the fakes' monotonic arrival times onto the wall clock of created_at.
        wall_offset = time.time() - time.monotonic()
        arrivals: dict[int | None, list[float]] = {}
        for req in telegram.requests_to(r"/sendMessage$", "POST"):
            text = form_params(req)[0].get("text", "")
            arrivals.setdefault(owner(text), []).append(req.at + wall_offset)
        accepted = Counter(owner(m["text"]) for m in telegram.messages)
        readable = burst_at + SETTLE_SECONDS
        leads = [FIRST_LEAD + n for n in range(calls)]
        delays = [max(arrivals[lead]) - readable for lead in leads if lead in arrivals]
        alert = min(arrivals[MISSED_LEAD]) - (missed_at + SETTLE_SECONDS) if MISSED_LEAD in arrivals else math.inf
        once = all(accepted[lead] == 1 for lead in leads) and accepted[MISSED_LEAD] == 1
        complete = len(delays) == calls
        row = Row(
            label=f"stereo {stereo_seconds / 60:g} min" if stereo else "mono 3 s",
            workers=workers,
            calls=calls,
            last_card=max(delays) if complete else math.inf,
            p50=percentile(delays, 50) if delays else math.inf,
            p95=percentile(delays, 95) if complete else math.inf,
            alert=alert,
            violations=amo.rate_violations(),
            once=once and accepted[None] == 0,
            extra=accepted[None],
            exit_code=exit_code,
        )
        if not row.has_figure or alert > INTERVAL + ALERT_SLACK:
            tail = log_path.read_text(errors="replace").splitlines()[-25:]
            print(f"  workers={workers}: last lines of the daemon's log:", *tail, sep="\n    ", file=sys.stderr)
        return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=100, help="answered calls in the burst (default 100)")
    parser.add_argument("--workers", default="1,2,4,8", help="comma-separated poller.workers values (default 1,2,4,8)")
    parser.add_argument(
        "--stereo-calls",
        type=int,
        default=32,
        help=f"10-minute stereo calls, a last row at {STEREO_WORKERS} workers (default 32; at most --calls; 0: none)",
    )
    parser.add_argument(
        "--stereo-seconds", type=float, default=STEREO_SECONDS, help="length of the stereo calls (default 600)"
    )
    parser.add_argument(
        "--openai-slots",
        type=int,
        default=0,
        help="openai.max_concurrent_requests (default 0: the daemon's default, 2 x workers)",
    )
    args = parser.parse_args()
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    stereo_calls = min(args.stereo_calls, args.calls)
    print(
        f"burst of {args.calls} answered calls (3 s mono) + 1 missed call (at +{MISSED_AFTER:g} s); "
        f"transcription {TRANSCRIBE_DELAY:g} s, analysis {ANALYSIS_DELAY:g} s; interval {INTERVAL} s; "
        f"{MANAGERS} managers' private chats; delays from readable (created_at + {SETTLE_SECONDS} s)"
    )
    if stereo_calls:
        print(
            f"stereo row: {stereo_calls} calls of {args.stereo_seconds / 60:g} min stereo, "
            f"transcription {STEREO_TRANSCRIBE_DELAY:g} s per channel"
        )
    print(
        "\n| recordings    | workers | calls | last card s | speed-up | p50 s | p95 s | missed alert s "
        "| amoCRM violations | posted once | exit |"
    )
    print(
        "|:--------------|--------:|------:|------------:|---------:|------:|------:|---------------:"
        "|------------------:|:-----------:|-----:|"
    )
    plan = [(workers, args.calls, False) for workers in counts]
    if stereo_calls:
        plan.append((STEREO_WORKERS, stereo_calls, True))
    rows: list[Row] = []
    for workers, calls, stereo in plan:
        row = scenario(workers, calls, stereo=stereo, stereo_seconds=args.stereo_seconds, slots=args.openai_slots)
        rows.append(row)
        base = next((r.last_card for r in rows if r.workers == 1 and r.label == row.label), None)
        speedup = f"{base / row.last_card:.2f}x" if base is not None and math.isfinite(row.last_card) else "—"
        once = "yes" if row.once else f"NO ({row.extra} extra)" if row.extra else "NO"
        print(
            f"| {row.label:<13} | {row.workers:>7} | {row.calls:>5} | {row.last_card:>11.1f} | {speedup:>8} | "
            f"{row.p50:>5.1f} | {row.p95:>5.1f} | {row.alert:>14.1f} | {row.violations:>17} | {once:^11} | "
            f"{row.exit_code!s:>4} |",
            flush=True,
        )

    mono = {r.workers: r for r in rows if r.label.startswith("mono")}
    judged = args.calls >= TARGET_CALLS
    checks: list[tuple[str, bool | None]] = [
        (
            "a figure in every row: every card and the alert posted exactly once, every daemon exited 0 on SIGTERM",
            all(r.has_figure for r in rows),
        )
    ]
    if 1 in mono and 4 in mono and judged:
        ratio = mono[1].last_card / mono[4].last_card
        checks.append(
            (f"workers=4 at least {SPEEDUP_TARGET}x faster than workers=1 (got {ratio:.2f}x)", ratio >= SPEEDUP_TARGET)
        )
    else:
        why = "not measured" if judged else f"not judged: fewer than {TARGET_CALLS} calls"
        checks.append((f"workers=4 at least {SPEEDUP_TARGET}x faster than workers=1 ({why})", None))
    alert_text = f"missed-call alert within interval + {ALERT_SLACK:g} s ({INTERVAL + ALERT_SLACK:g} s) in every row"
    alerts_ok = all(r.alert <= INTERVAL + ALERT_SLACK for r in rows)
    checks += [
        (alert_text, alerts_ok if judged else None),
        ("0 amoCRM rate violations", all(r.violations == 0 for r in rows)),
    ]
    print("\ntargets:")
    for text, ok in checks:
        print(f"- [{'x' if ok else ' '}] {text}{'' if ok is not False else '  <- MISSED'}")
    return 0 if all(ok is not False for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
