"""The hostile-input figures, measured through the real code against loopback fakes.

Run from the repository root:
    .venv/bin/python benchmarks/hostile.py [--deadlines 2,5[,10]] [--runs 3] [--storm N]

Three measures, one table (what | measured | target | ok):
1. Download deadline. A recording host (`FakeRecordings.add_drip`, 127.0.0.1) announces
   10 GB (`Content-Length`) and sends one byte a second. The real `RecordingDownloader`
   (its session from `recording_http.recording_session`, private hosts allowed since the fake
   is on loopback) is given `deadline_seconds` = each value of `--deadlines` (default 2 and
   5 s). Measured: from the call of `download()` to its `TransientError` "recording download
   from 127.0.0.1 took over N s", min / median / max over `--runs` runs (default 3), and the
   overshoot (worst cut - deadline). Target: overshoot <= 1 s. Without the deadline the
   download would run for centuries.
2. Alert storm. `--storm` missed incoming calls (default 10,000; duration 0, status 6, a few a
   second over the last hour, on 400 leads of one manager) wait in the loopback amoCRM; the
   real command line (`python -m salesbot_poller once`, fresh database, the default
   `telegram.max_alerts_per_cycle` of 30) makes one poll. Measured: Telegram messages
   accepted, the child's wall time (most of it reading the notes from amoCRM at its
   7 requests/s), and calls marked `missed_alerted` with a storm summary in the database.
   Target: 1 message (more calls than the cap), every call marked.
3. Long values. A call whose entity name, manager and phone are each 10,000 characters
   (tests/data/hostile.json's `long_text`) is rendered by `pipeline.messages`: the card (with
   an ordinary analysis, then with every free-text field of the analysis 10,000 characters
   too) and the missed-call alert. Measured: parts, the longest part in UTF-16 units.
   Target: every part non-empty (visible text, as Telegram checks) and <= 4096.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salesbot_poller.errors import TransientError
from salesbot_poller.pipeline.messages import LIMIT, render_conversation, render_missed, utf16_len
from salesbot_poller.services.recording_http import recording_session
from salesbot_poller.services.recordings import RecordingDownloader
from tests.conftest import AMO_TOKEN, BOT_TOKEN, CHAT_ID, OPENAI_KEY, Servers
from tests.fakes import FakeAmoCRM, FakeOpenAI, FakeRecordings, FakeTelegram, make_mp3, validate_telegram_html
from tests.hostile import values
from tests.test_hostile_messages import add_missed_calls, analysis, context  # the same data as the tests

ROOT = Path(__file__).resolve().parent.parent
OVERSHOOT_TARGET = 1.0  # s
ALERT_CAP = 30  # telegram.max_alerts_per_cycle's default


@dataclass
class Line:
    what: str
    measured: str
    target: str
    ok: bool


# --- 1. the download deadline against a dripping host ----------------------------------------


def quiet_broken_pipes(fake: FakeRecordings) -> None:
    """The drip's handler thread finds the client gone at its next write (after the cut, on
    purpose): socketserver would print that BrokenPipeError's traceback over the table."""
    server = fake._server
    assert server is not None
    report = server.handle_error

    def handle_error(request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
            report(request, client_address)

    server.handle_error = handle_error  # type: ignore[method-assign]


def wait_for_threads(count: int, seconds: float) -> None:
    """Until at most `count` threads run (the fake's handler ends at its next write)."""
    until = time.monotonic() + seconds
    while threading.active_count() > count and time.monotonic() < until:
        time.sleep(0.05)


def deadline_lines(deadlines: list[float], runs: int) -> list[Line]:
    drip = values()["drip"]
    lines: list[Line] = []
    with FakeRecordings() as recordings, tempfile.TemporaryDirectory() as tmp:
        url = recordings.add_drip(
            "/rec/slow.mp3",
            make_mp3(3.0),
            announced_bytes=drip["announced_bytes"],
            bytes_per_interval=drip["bytes_per_interval"],
            interval_seconds=drip["interval_seconds"],
        )
        quiet_broken_pipes(recordings)
        session = recording_session("salesbot-benchmark", allow_private=True)
        for deadline in deadlines:
            downloader = RecordingDownloader(session, Path(tmp) / "audio", deadline_seconds=deadline)
            expected = f"recording download from 127.0.0.1 took over {deadline:g} s"
            cuts: list[float] = []
            right_error = True
            for run in range(runs):
                threads = threading.active_count()
                started = time.monotonic()
                try:
                    downloader.download(url, f"call-{run}", 3)
                except TransientError as error:
                    cuts.append(time.monotonic() - started)
                    right_error &= str(error) == expected
                else:  # the fake never ends its body: this cannot happen
                    cuts.append(float("inf"))
                    right_error = False
                wait_for_threads(threads, 2 * drip["interval_seconds"] + 1)  # runs never overlap
            overshoot = max(cuts) - deadline
            lines.append(
                Line(
                    f"drip 1 B/s, 10 GB announced; deadline {deadline:g} s: cut min/med/max",
                    f"{min(cuts):.3f} / {statistics.median(cuts):.3f} / {max(cuts):.3f} s"
                    + ("" if right_error else " (WRONG ERROR)"),
                    f">= {deadline:g} s, 'took over {deadline:g} s'",
                    min(cuts) >= deadline and right_error,
                )
            )
            lines.append(
                Line(
                    f"  overshoot (max cut - deadline), {runs} runs",
                    f"{overshoot:+.3f} s",
                    f"<= {OVERSHOOT_TARGET:g} s",
                    0 <= overshoot <= OVERSHOOT_TARGET,
                )
            )
        session.close()
    return lines


# --- 2. an alert storm through the command line -------------------------------------------------


def storm_lines(count: int) -> list[Line]:
    with (
        tempfile.TemporaryDirectory() as tmp_name,
        FakeAmoCRM(token=AMO_TOKEN) as amo,
        FakeRecordings() as recordings,
        FakeOpenAI(api_key=OPENAI_KEY) as openai,
        FakeTelegram(token=BOT_TOKEN) as telegram,
    ):
        tmp = Path(tmp_name)
        telegram.known_chats = {CHAT_ID}
        servers = Servers(amo, recordings, openai, telegram, tmp)
        # 4 a second, the last one about 8 min ago; the first poll looks back far enough for all.
        span = count // 4
        add_missed_calls(servers, count, int(time.time()) - span - 500)
        config = servers.write_config(initial_lookback_minutes=max(60, (span + 600) // 60 + 1))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SALESBOT_")}
        env |= {"SALESBOT_CONFIG": str(config), "TZ": "UTC", "PYTHONPATH": str(ROOT)}
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "salesbot_poller", "once"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=max(600, count // 10),
            stdin=subprocess.DEVNULL,
        )
        seconds = time.monotonic() - started
        if result.returncode != 0:
            print(
                f"  `once` exited {result.returncode}; its stderr ends:",
                *result.stderr.splitlines()[-20:],
                sep="\n    ",
                file=sys.stderr,
            )
        messages = len(telegram.messages)
        with closing(sqlite3.connect(tmp / "state" / "salesbot.db")) as db:
            ((marked,),) = db.execute(
                "SELECT COUNT(*) FROM call WHERE stage = 'missed_alerted' AND summarised_in IS NOT NULL"
            ).fetchall()
            ((total,),) = db.execute("SELECT COUNT(*) FROM call").fetchall()
    expected_messages = 1 if count > ALERT_CAP else count
    return [
        Line(
            f"storm: {count:,} missed calls, one `once`: Telegram messages",
            f"{messages:,}",
            f"{expected_messages:,}",
            messages == expected_messages and result.returncode == 0,
        ),
        Line(
            "  wall time of `once` (exit code)",
            f"{seconds:.1f} s ({result.returncode})",
            "exit 0",
            result.returncode == 0,
        ),
        Line(
            "  calls marked missed_alerted in the storm summary",
            f"{marked:,} of {total:,}",
            f"{count:,}" if count > ALERT_CAP else "0 (under the cap)",
            marked == (count if count > ALERT_CAP else 0) and total == count,
        ),
    ]


# --- 3. values of 10,000 characters in a card -------------------------------------------------


def parts_line(what: str, parts: list[str]) -> Line:
    sizes = [utf16_len(p) for p in parts]
    non_empty = all(validate_telegram_html(p).strip() for p in parts)
    return Line(
        what,
        f"{len(parts)} part(s), longest {max(sizes, default=0):,} UTF-16" + ("" if non_empty else ", AN EMPTY PART"),
        f"each non-empty, <= {LIMIT}",
        bool(parts) and non_empty and max(sizes) <= LIMIT,
    )


def long_value_lines() -> list[Line]:
    long = values()["long_text"]
    ordinary = "Клиент просит перезвонить завтра"
    return [
        parts_line(
            f"card: entity/manager/phone of {len(long):,} chars",
            render_conversation(context(long), analysis(ordinary), UTC),
        ),
        parts_line(
            "  the same, every analysis field too",
            render_conversation(context(long), analysis(long), UTC),
        ),
        parts_line("  missed-call alert, the same note", render_missed(context(long), UTC)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--deadlines", default="2,5", help="comma-separated download deadlines in s (default 2,5)")
    parser.add_argument("--runs", type=int, default=3, help="runs per deadline (default 3)")
    parser.add_argument("--storm", type=int, default=values()["alert_storm"], help="missed calls (default 10000)")
    args = parser.parse_args()
    deadlines = [float(d) for d in args.deadlines.split(",") if d.strip()]

    lines = deadline_lines(deadlines, args.runs) + storm_lines(args.storm) + long_value_lines()
    widths = [
        max(len(c) for c in column)
        for column in zip(
            ("what", "measured", "target", "ok"),
            *((line.what, line.measured, line.target, "yes") for line in lines),
            strict=False,
        )
    ]
    print("hostile input, loopback fakes on 127.0.0.1\n")
    header = ("what", "measured", "target", "ok")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        cells = (line.what, line.measured, line.target, "yes" if line.ok else "NO")
        print("| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |")
    return 0 if all(line.ok for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
