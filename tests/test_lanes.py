"""The two lanes: a missed call is alerted while the work lane is busy, claims are exclusive,
and the limits shared by the work lane's threads hold (Telegram pacing, daily budget, a busy
database after an accepted message)."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from salesbot_poller.config import OpenAIConfig
from salesbot_poller.domain import Destination, Keyboard, Planned, Stage
from salesbot_poller.errors import BudgetReached, Busy
from salesbot_poller.lanes import drain, work_next
from salesbot_poller.pipeline.context import Tally
from salesbot_poller.pipeline.usage import BudgetGate
from salesbot_poller.services.throttle import ChatPacer
from salesbot_poller.store import Call, Store
from tests.builder import build_rig
from tests.conftest import Servers, assert_no_secret
from tests.fakes import make_mp3
from tests.fakes.base import form_params
from tests.memory import MemoryNotifier, MemoryRecordings
from tests.test_daemon import wait_for
from tests.test_systemd import start_daemon

INTERVAL = 1.0


@pytest.mark.slow
def test_a_missed_call_is_alerted_within_the_interval_while_every_worker_is_busy(servers: Servers) -> None:
    now = int(time.time())
    for n in range(6):  # each transcription takes 4 s: two workers are busy for 12 s
        servers.amo.add_call(
            entity_id=7100 + n,
            note_id=100 + n,
            duration=60,
            phone=f"+7999100{n:04d}",
            link=servers.recordings.add(f"/r/{n}.mp3", make_mp3(1.0, freq=300.0 + 30 * n)),
            created_at=now - 30,
        )
    servers.openai.transcribe_delay = 4.0
    servers.write_config(interval_seconds=INTERVAL, workers=2)
    daemon = start_daemon(servers)
    try:
        wait_for(lambda: len(servers.openai.transcriptions) >= 2)  # both workers are inside a transcription
        readable = time.monotonic()  # the fakes stamp requests with this clock
        # Created 10 s ago: past the poller's 5 s settle delay, so readable from now on.
        servers.amo.add_call(
            entity_id=7200, note_id=200, duration=0, phone="+79992000000", link=None, created_at=int(time.time()) - 10
        )
        wait_for(lambda: any("+7 999 200-00-00" in m["text"] for m in servers.telegram.messages), timeout=20)
        alert = next(
            r.at for r in servers.telegram.requests_to("sendMessage") if "+7 999 200-00-00" in form_params(r)[0]["text"]
        )
        cards_before = [m for m in servers.telegram.messages if "Пропущенный" not in m["visible_text"]]
        daemon.terminate()
        out, err = daemon.communicate(timeout=20)
    finally:
        daemon.kill()
    assert daemon.returncode == 0, err
    assert len(cards_before) < 6, "the alert did not wait for the answered calls"
    assert_no_secret(out, err)
    assert "Traceback" not in err
    print(f"\nmissed-call alert {alert - readable:.2f} s after its event became readable")
    assert alert - readable < INTERVAL + 2.0


def _store(tmp_path: Path) -> Store:
    return Store.open(f"sqlite:///{tmp_path}/db.sqlite", 0)


def _add_calls(n: int) -> None:
    for i in range(n):
        Call.create(
            event_id=f"e{i}",
            direction="in",
            entity_type="leads",
            entity_id=i,
            note_id=i,
            event_created_at=0,
            first_seen_at=0,
            updated_at=0,
            stage=Stage.READY.value,
            kind="conversation",
        )


@pytest.mark.postgres  # PostgreSQL: the claim's FOR UPDATE SKIP LOCKED
def test_threads_racing_for_calls_claim_each_exactly_once(database_url: str) -> None:
    store = Store.open(database_url, 0)
    _add_calls(40)
    claimed: list[tuple[str, int]] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        with store.db.connection_context():  # a connection of its own, as a worker has
            while (call := store.claim_next(name, 10, [Stage.READY], "conversation")) is not None:
                with lock:
                    claimed.append((name, call.id))

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [call_id for _, call_id in claimed]
    assert sorted(ids) == list(range(1, 41)), "every call claimed, none twice"
    assert len({name for name, _ in claimed}) > 1, "the work was shared"
    assert store.claim_next("late", 10, [Stage.READY], "conversation") is None
    assert store.release_all_claims() == 40
    first = store.claim_next("again", 10, [Stage.READY], "conversation")
    assert first is not None and first.id == 1, "the oldest due call first"
    store.close()


def test_a_claim_is_a_conditional_update_that_a_second_process_loses(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _add_calls(1)
    other = sqlite3.connect(tmp_path / "db.sqlite")  # another process's connection, same file
    other.execute("UPDATE call SET claimed_by = 'other:1', claimed_at = 5 WHERE id = 1")
    other.commit()
    assert store.claim_next("me", 10, [Stage.READY], "conversation") is None, "claimed elsewhere: left alone"
    other.close()
    store.close()


@pytest.mark.slow
def test_a_commit_after_an_accepted_message_waits_out_a_locked_database(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _add_calls(1)
    call = Call.get_by_id(1)
    other = sqlite3.connect(tmp_path / "db.sqlite", timeout=0, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock ...
    store.db.execute_sql("PRAGMA busy_timeout = 100")  # (short here, so the retry is what waits)

    def release() -> None:
        time.sleep(1.5)
        other.execute("COMMIT")  # ... for longer than the busy timeout

    threading.Thread(target=release).start()
    store.committed(lambda: store.update(call, 1, last_error="kept"), patience=30)
    assert Call.get_by_id(1).last_error == "kept"
    with pytest.raises(Exception, match="locked"):
        other.execute("BEGIN IMMEDIATE")
        store.committed(lambda: store.update(call, 2, last_error="lost"), patience=0.2)
    other.execute("ROLLBACK")
    other.close()
    store.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_one_message_a_second_per_chat_and_other_chats_are_not_held() -> None:
    clock = FakeClock()
    pacer = ChatPacer(clock=clock, sleep=clock.sleep)
    assert pacer.reserve("42") == 0
    assert pacer.reserve("42") == pytest.approx(1.0), "the same chat waits a second"
    assert pacer.reserve("43") == 0, "another chat does not"
    clock.now += 1.0
    assert pacer.reserve("42") == 0


def test_a_group_chat_gets_at_most_twenty_messages_a_minute() -> None:
    clock = FakeClock()
    pacer = ChatPacer(clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(20):
        pacer.turn("-100", 0, patience=5)
    assert clock.now - start == pytest.approx(19.0)
    with pytest.raises(Busy) as busy:
        pacer.turn("-100", 0, patience=5)
    assert busy.value.retry_after == pytest.approx(41.0), "the 21st waits for the first to leave the minute"
    for _ in range(25):  # a private chat has no per-minute limit
        pacer.turn("777", 0, patience=5)


def test_a_429_pauses_that_chat_only_until_its_retry_after() -> None:
    clock = FakeClock()
    pacer = ChatPacer(clock=clock, sleep=clock.sleep)
    pacer.pause("-100", until=1_000_300)
    with pytest.raises(Busy) as busy:
        pacer.turn("-100", 1_000_000)
    assert busy.value.retry_after == 300
    pacer.turn("-200", 1_000_000)  # the others go on
    pacer.turn("-100", 1_000_300)


@pytest.mark.slow
def test_an_alert_waiting_for_a_chat_goes_before_cards() -> None:
    pacer = ChatPacer()
    pacer.reserve("42")  # a card just went: the next slot is in a second
    order: list[str] = []
    alert = threading.Thread(target=lambda: (pacer.turn("42", 0, urgent=True, patience=5), order.append("alert")))
    alert.start()
    time.sleep(0.1)
    assert pacer.reserve("42") > 0, "a card may not take the slot the alert waits for"
    alert.join()
    assert order == ["alert"]


def test_the_daily_budget_holds_with_many_workers_at_once(tmp_path: Path) -> None:
    store = _store(tmp_path)
    prices = OpenAIConfig(audio_price_per_minute_usd=1.0, daily_budget_usd=2.5)  # 2.5 one-minute uploads
    gate = BudgetGate()
    tickets: list[int] = []
    barrier = threading.Barrier(8)
    lock = threading.Lock()

    def worker(call_id: int) -> None:
        with store.db.connection_context():
            meter = gate.meter(store, prices, call_id, 86400 * 10)
            barrier.wait()
            try:
                ticket = meter.reserve(60.0, "whisper-1")
            except BudgetReached:
                return
            with lock:
                tickets.append(ticket)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(tickets) == 2, "as many uploads as the budget holds, never eight"
    for ticket in tickets:
        store.release_upload(ticket)
    assert gate.hold(store, prices, 86400 * 10) is None, "nothing spent: reservations end on release"
    store.close()


@pytest.mark.slow
def test_cards_of_one_chat_keep_the_order_of_their_calls(tmp_path: Path) -> None:
    """Four workers send four rendered cards to one chat; the first call's send is slow. Each
    later card waits for the earlier ones, so Telegram gets them in the calls' order."""

    class SlowFirst(MemoryNotifier):
        def send(
            self,
            html: str,
            to: Destination | None = None,
            reply_to: int | None = None,
            keyboard: Keyboard | None = None,
        ) -> int:
            if html == "card 1":
                time.sleep(0.5)  # the first call's card takes a while to be accepted
            with lock:
                return super().send(html, to, reply_to, keyboard)

    lock = threading.Lock()
    # No Telegram pacing (the builder's default): Telegram's rate is not what is tested here.
    rig = build_rig(tmp_path, now=datetime.fromtimestamp(0, UTC), notifier=SlowFirst())
    store = rig.app.store
    _add_calls(4)
    for call in Call.select():
        store.update(call, 0, stage=Stage.NOTIFYING)
        store.enqueue([Planned(f"call:{call.id}", "card", None, {"parts": [f"card {call.id}"]})], call.id, 0)

    drain(rig.app, 10, workers=4)
    assert rig.notifier.sent == ["card 1", "card 2", "card 3", "card 4"]
    assert [c.stage for c in Call.select().order_by(Call.id)] == ["notified"] * 4
    store.close()


def test_a_sender_waiting_for_its_slot_sees_a_429_that_came_meanwhile() -> None:
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        pacer.pause("42", until=1_000_300)

    pacer = ChatPacer(clock=clock, sleep=sleep)
    pacer.reserve("42")  # a message just went: the next one waits for its slot ...
    with pytest.raises(Busy):  # ... and meanwhile Telegram answered that one with a 429
        pacer.turn("42", 1_000_000, patience=5)


@pytest.mark.postgres
def test_a_claim_older_than_its_lease_is_taken_back_and_a_renewed_one_is_not(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store.open(database_url, 0)
    _add_calls(1)
    ready = ([Stage.READY], "conversation")
    first = store.claim_next("w1", 10, *ready, lease=100)
    assert first is not None
    assert store.claim_next("w2", 50, *ready, lease=100) is None, "held within its lease"
    assert store.renew(first, "w1", 60)
    assert store.claim_next("w2", 159, *ready, lease=100) is None, "renewed at 60: held until 160"
    with caplog.at_level(logging.WARNING):
        second = store.claim_next("w2", 160, *ready, lease=100)
    assert second is not None and second.claimed_by == "w2"
    assert "call 1: its claim by w1, not renewed since 60, is taken back" in caplog.text
    assert not store.renew(first, "w1", 170), "w1 no longer holds it: it must leave the call"
    store.release(first, "w1")
    assert Call.get_by_id(1).claimed_by == "w2", "w1 gives back nothing it no longer holds"
    assert store.claim_next("w3", 10**9, *ready) is None, "without a lease a claim is never taken back"
    assert store.release_owner("w2") == 1 and Call.get_by_id(1).claimed_by is None
    store.close()


def test_a_worker_whose_claim_was_taken_back_leaves_the_call_at_the_next_stage(tmp_path: Path) -> None:
    class TakenMeanwhile(MemoryRecordings):
        def download(self, url: str, stem: str, note_seconds: int) -> Path:
            # The download outlived the lease: another worker took the call back meanwhile.
            Call.update(claimed_by="other:1", claimed_at=5000).where(Call.id == 1).execute()
            return super().download(url, stem, note_seconds)

    rig = build_rig(tmp_path, now=datetime.fromtimestamp(0, UTC))
    rig.app.recordings = TakenMeanwhile(rig.recordings.directory)
    _add_calls(1)
    assert work_next(rig.app, "me:1", 10, lambda: False, Tally())
    call = Call.get_by_id(1)
    assert call.stage == Stage.DOWNLOADED.value, "the stage in flight is committed"
    assert call.claimed_by == "other:1", "its new worker keeps it"
    assert rig.transcriber.calls == [], "no second transcription paid by the worker that lost it"
    rig.app.store.close()
