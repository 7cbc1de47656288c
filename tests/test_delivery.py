"""Delivery through the real Telegram client against the fake Bot API: routing by manager,
the low-score copy to the alert chat, the transcript document, and exactly-once delivery per
destination across a failure and a restart."""

from __future__ import annotations

from salesbot_poller.lanes import run_once
from tests.conftest import CHAT_ID, Servers
from tests.fakes import validate_telegram_html
from tests.loopback_app import IVAN, MARIA, add_call, at, calls, loopback_rig

IVAN_CHAT, ALERT_CHAT = "-1001111", "-1009999"


def test_calls_go_to_the_managers_chat_and_topic_and_unmapped_ones_to_the_default_chat(servers: Servers) -> None:
    servers.telegram.known_chats |= {IVAN_CHAT}
    rig = loopback_rig(
        servers, paced=False, telegram={"routes": {str(IVAN): {"chat_id": int(IVAN_CHAT), "message_thread_id": 7}}}
    )
    add_call(rig, 1, user=IVAN)
    add_call(rig, 2, user=MARIA)
    add_call(rig, 3, user=IVAN, duration=0, status=6)  # missed: routed like a card
    run_once(rig.app, at(0))
    sent = {
        (m["chat_id"], m["message_thread_id"], "Пропущенный" in m["visible_text"]) for m in servers.telegram.messages
    }
    assert sent == {(IVAN_CHAT, "7", False), (CHAT_ID, None, False), (IVAN_CHAT, "7", True)}
    assert [c.stage for c in calls()] == ["notified", "notified", "missed_alerted"]


def test_a_low_score_also_goes_to_the_alert_chat_once(servers: Servers) -> None:
    servers.telegram.known_chats |= {ALERT_CHAT}
    rig = loopback_rig(servers, paced=False, telegram={"alert_below_score": 60, "alert_chat_id": ALERT_CHAT})
    analyzer = rig.analyzer
    analyzer.score = 40
    add_call(rig, 1)
    run_once(rig.app, at(0))
    analyzer.score = 60  # not below the threshold
    add_call(rig, 2, minutes=-5)
    run_once(rig.app, at(1))
    chats = [(m["chat_id"], "40" in m["visible_text"]) for m in servers.telegram.messages]
    assert chats == [(CHAT_ID, True), (ALERT_CHAT, True), (CHAT_ID, False)]
    for message in servers.telegram.messages:
        validate_telegram_html(message["text"])


def test_the_alert_copy_is_not_doubled_when_the_alert_chat_is_the_cards_chat(servers: Servers) -> None:
    rig = loopback_rig(servers, paced=False, telegram={"alert_below_score": 60, "alert_chat_id": CHAT_ID})
    rig.analyzer.score = 10
    add_call(rig, 1)
    run_once(rig.app, at(0))
    assert len(servers.telegram.messages) == 1


def test_the_transcript_goes_as_a_txt_document_replying_to_each_card(servers: Servers) -> None:
    servers.telegram.known_chats |= {ALERT_CHAT}
    rig = loopback_rig(
        servers, paced=False, telegram={"attach_transcript": True, "alert_below_score": 60, "alert_chat_id": ALERT_CHAT}
    )
    rig.analyzer.score = 30
    add_call(rig, 1)
    run_once(rig.app, at(0))
    (call,) = calls()
    cards = {m["chat_id"]: m["message_id"] for m in servers.telegram.messages}
    assert set(cards) == {CHAT_ID, ALERT_CHAT}
    documents = servers.telegram.documents
    assert [d["chat_id"] for d in documents] == [CHAT_ID, ALERT_CHAT]
    for document in documents:
        assert document["filename"] == f"call-{call.id}-transcript.txt"
        assert document["bytes"].decode() == call.transcript
        assert document["reply_parameters"]["message_id"] == cards[document["chat_id"]]
        validate_telegram_html(document["caption"])


def test_no_transcript_document_unless_asked(servers: Servers) -> None:
    rig = loopback_rig(servers, paced=False)
    add_call(rig, 1)
    run_once(rig.app, at(0))
    assert servers.telegram.documents == [] and len(servers.telegram.messages) == 1


def test_a_destination_that_failed_is_retried_alone_and_none_is_sent_twice(servers: Servers) -> None:
    servers.telegram.known_chats |= {ALERT_CHAT}
    servers.telegram.down_chats = {ALERT_CHAT}
    rig = loopback_rig(
        servers, paced=False, telegram={"alert_below_score": 60, "alert_chat_id": ALERT_CHAT, "attach_transcript": True}
    )
    rig.analyzer.score = 20
    add_call(rig, 1)
    run_once(rig.app, at(0))
    (call,) = calls()
    assert call.stage == "notified", "the card is out: a failing alert chat never holds the call"
    extra = rig.app.store.find_delivery(f"call:1:card:{ALERT_CHAT}:0")
    assert extra is not None and extra.done_at is None and extra.attempts == 1 and "502" in (extra.error or "")
    assert [m["chat_id"] for m in servers.telegram.messages] == [CHAT_ID]
    assert [d["chat_id"] for d in servers.telegram.documents] == [CHAT_ID]

    servers.telegram.down_chats = set()
    rig.app.store.close()
    restarted = loopback_rig(
        servers, paced=False, telegram={"alert_below_score": 60, "alert_chat_id": ALERT_CHAT, "attach_transcript": True}
    ).app
    run_once(restarted, at(10))  # after the backoff
    assert [m["chat_id"] for m in servers.telegram.messages] == [CHAT_ID, ALERT_CHAT]
    assert [d["chat_id"] for d in servers.telegram.documents] == [CHAT_ID, ALERT_CHAT]
    assert calls()[0].stage == "notified"
    run_once(restarted, at(20))
    assert len(servers.telegram.messages) == 2 and len(servers.telegram.documents) == 2


def test_a_dry_run_shows_what_a_call_left_mid_send_still_has_to_send(servers: Servers) -> None:
    servers.telegram.known_chats |= {ALERT_CHAT}
    servers.telegram.down_chats = {ALERT_CHAT}
    settings = {"alert_below_score": 60, "alert_chat_id": ALERT_CHAT}
    rig = loopback_rig(servers, paced=False, telegram=settings)
    rig.analyzer.score = 20
    add_call(rig, 1)
    run_once(rig.app, at(0))
    rig.app.store.close()
    printed: list[str] = []
    dry = loopback_rig(servers, paced=False, dry_run=printed, telegram=settings).app
    servers.telegram.down_chats = set()
    run_once(dry, at(10))
    assert len(printed) == 1 and f"card_alert -> chat {ALERT_CHAT}" in printed[0]
    assert [m["chat_id"] for m in servers.telegram.messages] == [CHAT_ID] and calls()[0].stage == "notified"
