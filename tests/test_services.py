"""Each service client against its loopback server, through the real `requests`, `openai`
and `telebot` clients: what each failure becomes, and that no secret reaches an error text."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from salesbot_poller.app import build_notifier, build_openai
from salesbot_poller.config import Config, parse_config
from salesbot_poller.domain import CallContext
from salesbot_poller.errors import FatalError, PermanentError, TransientError
from salesbot_poller.services.amocrm import AmoClient, AmoForbidden
from salesbot_poller.services.amocrm_auth import LongLivedToken, OAuthTokens
from salesbot_poller.services.analysis import OpenAIAnalyzer
from salesbot_poller.services.recordings import RecordingDownloader
from salesbot_poller.services.speech import OpenAITranscriber
from salesbot_poller.store import Store
from tests.conftest import AMO_TOKEN, BOT_TOKEN, CHAT_ID, SECRETS, Servers
from tests.fakes import make_mp3

NOW = int(time.time())


def clock() -> datetime:
    return datetime.now(UTC)


def config_for(servers: Servers, **amocrm: str) -> Config:
    text = servers.config_text()
    import tomllib

    raw = tomllib.loads(text)
    if amocrm:
        raw["amocrm"] = {"base_url": servers.amo.base_url, **amocrm}
    return parse_config(raw, {})


def amo_client(servers: Servers, sleeps: list[float] | None = None) -> AmoClient:
    return AmoClient(
        requests.Session(),
        servers.amo.base_url,
        LongLivedToken(AMO_TOKEN),
        clock,
        sleep=(sleeps.append if sleeps is not None else None),
    )


# --- amoCRM --------------------------------------------------------------------------------


def test_events_walk_every_page_and_204_means_empty(servers: Servers) -> None:
    amo = amo_client(servers)
    assert amo.call_events(NOW - 3600, NOW).events == []  # 204 on the first page
    for n in range(230):
        servers.amo.add_call(
            entity_id=7000 + n, note_id=n + 1, duration=3, phone="+7999", link=None, created_at=NOW - 1000 + n
        )
    batch = amo.call_events(NOW - 3600, NOW)
    assert len(batch.events) == 230 and len({e.event_id for e in batch.events}) == 230
    pages = [r.query["page"][0] for r in servers.amo.requests_to("/api/v4/events$")][1:]
    assert pages == ["1", "2", "3"]
    limits = {r.query["limit"][0] for r in servers.amo.requests_to("/api/v4/events$")}
    assert limits == {"100"}


def test_notes_are_batched_and_a_missing_note_is_absent(servers: Servers) -> None:
    for n in range(1, 4):
        servers.amo.add_call(entity_id=7001, note_id=n, duration=60, phone="+7999", link=None, created_at=NOW)
    notes = amo_client(servers).call_notes("leads", [1, 2, 3, 99])
    assert sorted(notes) == [1, 2, 3]
    assert servers.amo.count("/api/v4/leads/notes") == 1


def test_malformed_events_are_reported_with_the_field(servers: Servers) -> None:
    servers.amo.add_call(entity_id=7001, note_id=1, duration=60, phone="+7999", link=None, created_at=NOW - 10)
    servers.amo.events.append(
        {
            "id": "01BROKEN",
            "type": "incoming_call",
            "entity_type": "lead",
            "entity_id": 5,
            "created_at": NOW - 5,
            "value_after": [],
        }
    )
    batch = amo_client(servers).call_events(NOW - 60, NOW)
    assert len(batch.events) == 1
    assert [(ref, reason) for ref, reason, _ in batch.malformed] == [
        ("01BROKEN", "field 'value_after[0].note.id' is missing (value_after: [])")
    ]


def test_429_honours_retry_after_and_html_bodies(servers: Servers) -> None:
    sleeps: list[float] = []
    servers.amo.fail_next("/api/v4/account", 429, {"status": 429}, headers={"Retry-After": "3"})
    servers.amo.fail_next("/api/v4/account", 429, "<html><body>Too Many Requests</body></html>")
    servers.amo.fail_next("/api/v4/account", 503, "<html>Service Unavailable</html>")
    assert amo_client(servers, sleeps).account()["name"] == "Acme"
    assert sleeps[0] == 3 and len(sleeps) == 3 and all(0 < s <= 30 for s in sleeps[1:])


@pytest.mark.slow
def test_persistent_5xx_gives_up_boundedly_as_transient(servers: Servers) -> None:
    sleeps: list[float] = []
    servers.amo.fail_next("/api/v4/events", 500, "oops", times=10)
    with pytest.raises(TransientError, match="HTTP 500"):
        amo_client(servers, sleeps).call_events(NOW - 60, NOW)
    assert servers.amo.count("/api/v4/events") == 8 and len(sleeps) == 7 and sum(sleeps) <= 120


@pytest.mark.parametrize(
    ("status", "error", "text"),
    [(401, FatalError, "long-lived token (401)"), (402, FatalError, "not paid"), (403, AmoForbidden, "IP")],
)
def test_auth_and_account_errors_are_fatal(servers: Servers, status: int, error: type, text: str) -> None:
    servers.amo.fail_next("/api/v4/account", status, "<html>no</html>")
    with pytest.raises(error, match=re.escape(text)) as caught:
        amo_client(servers).account()
    assert AMO_TOKEN not in str(caught.value)


def test_users_list_forbidden_falls_back_to_ids(servers: Servers) -> None:
    servers.amo.users_forbidden = True
    assert amo_client(servers).user_names() == {}


def test_oauth_rotation_persists_the_new_pair_and_a_second_process_reuses_it(servers: Servers) -> None:
    config = config_for(
        servers, client_id="cid", client_secret="csecret", redirect_uri="https://x/cb", refresh_token="refresh-1"
    )
    store = Store.open(config.storage.database, NOW)
    first = OAuthTokens(config.amocrm, store, requests.Session(), clock)
    client = AmoClient(requests.Session(), servers.amo.base_url, first, clock)
    assert client.account()["id"] == 31000001
    assert servers.amo.count("/oauth2/access_token") == 1
    # A second process (new objects, same database) uses the stored pair: no refresh.
    second = OAuthTokens(config.amocrm, store, requests.Session(), clock)
    AmoClient(requests.Session(), servers.amo.base_url, second, clock).account()
    assert servers.amo.count("/oauth2/access_token") == 1
    # The old refresh token is spent; a rejected access token makes one refresh with the new one.
    servers.amo.valid_tokens.clear()
    assert client.account()["id"] == 31000001
    assert servers.amo.count("/oauth2/access_token") == 2
    assert store.get_state("amocrm_oauth") and "refresh-1" not in (store.get_state("amocrm_oauth") or "")


def test_a_revoked_refresh_token_is_fatal_and_the_stored_pair_is_kept(servers: Servers) -> None:
    config = config_for(
        servers, client_id="cid", client_secret="csecret", redirect_uri="https://x/cb", refresh_token="revoked"
    )
    store = Store.open(config.storage.database, NOW)
    tokens = OAuthTokens(config.amocrm, store, requests.Session(), clock)
    with pytest.raises(FatalError, match="Token has been revoked"):
        AmoClient(requests.Session(), servers.amo.base_url, tokens, clock).account()
    assert "refresh_token" in (store.get_state("amocrm_oauth") or "")


# --- recordings ------------------------------------------------------------------------------


def downloader(tmp: Path) -> RecordingDownloader:
    return RecordingDownloader(requests.Session(), tmp / "audio")


def test_recording_follows_redirects_and_is_checked_as_audio(servers: Servers) -> None:
    audio = make_mp3(1.0)
    servers.recordings.add("/real.mp3", audio, content_type="application/octet-stream")
    url = servers.recordings.add_redirect("/signed?id=1&hash=secretsig", "/real.mp3")
    path = downloader(servers.tmp).download(url, "call-1", 0)
    assert path.name == "call-1.mp3" and path.read_bytes() == audio
    assert not list(path.parent.glob("*.part"))


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"", "audio/mpeg", 200, "empty or too short"),
        (b"missing", "text/html", 404, "HTTP 404"),
    ],
)
def test_not_audio_yet_is_transient_and_leaves_no_file(
    servers: Servers, body: bytes, content_type: str, status: int, message: str
) -> None:
    url = servers.recordings.add("/rec.mp3?hash=signature", body, content_type=content_type, status=status)
    with pytest.raises(TransientError, match=message) as caught:
        downloader(servers.tmp).download(url, "call-1", 0)
    assert "signature" not in str(caught.value), "signed links are not echoed"
    assert not list((servers.tmp / "audio").iterdir())


def test_unreachable_recording_host_is_transient(servers: Servers) -> None:
    with pytest.raises(TransientError, match=re.escape("127.0.0.1")):
        downloader(servers.tmp).download("http://127.0.0.1:9/rec.mp3", "call-1", 0)


# --- OpenAI ----------------------------------------------------------------------------------


def test_transcription_and_analysis_through_the_sdk(servers: Servers) -> None:
    config = config_for(servers)
    client = build_openai(config)
    audio = servers.tmp / "call.mp3"
    audio.write_bytes(make_mp3(2.0))
    transcript = OpenAITranscriber(client, "whisper-1", "ru").transcribe(audio)
    sent = servers.openai.transcriptions[0]
    assert str(sent["size"]) in transcript.text  # the prepared 16 kHz Opus upload, not the MP3
    assert sent["filename"] == "call-000.ogg" and sent["fields"]["language"] == "ru"
    context = CallContext("in", "Иван", "leads", "ООО", "u", "+7", 125, NOW)
    analysis = OpenAIAnalyzer(client, "gpt-4o-mini").analyse(transcript.text, context)
    assert analysis.score == 63 and analysis.next_step and analysis.next_step.action == "Отправить КП"
    request = servers.openai.chat_requests[0]
    assert request["response_format"]["type"] == "json_schema"
    assert "Расшифровка" in request["messages"][1]["content"]


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (500, {"error": {"message": "boom", "type": "server_error"}}, TransientError, "HTTP 500"),
        (
            429,
            {"error": {"message": "slow", "type": "requests", "code": "rate_limit_exceeded"}},
            TransientError,
            "rate limited",
        ),
        (
            401,
            {"error": {"message": "Incorrect API key provided: sk-t***cdef", "code": "invalid_api_key"}},
            FatalError,
            "rejected the key",
        ),
        (400, {"error": {"message": "The audio file could not be decoded"}}, PermanentError, "could not be decoded"),
    ],
)
def test_openai_failures_are_classed(servers: Servers, status: int, body: dict, error: type, text: str) -> None:
    audio = servers.tmp / "call.mp3"
    audio.write_bytes(make_mp3(1.0))
    servers.openai.fail_next("/v1/audio/transcriptions", status, body)
    with pytest.raises(error, match=text) as caught:
        OpenAITranscriber(build_openai(config_for(servers)), "whisper-1", "ru").transcribe(audio)
    assert "sk-t" not in str(caught.value)


def test_a_summary_without_verdicts_is_kept_and_not_re_asked(servers: Servers) -> None:
    servers.openai.analysis_fn = lambda request: {"summary": "Клиент спросил цену", "score": 250}
    context = CallContext("in", "Иван", "leads", "ООО", "u", "+7", 125, NOW)
    analysis = OpenAIAnalyzer(build_openai(config_for(servers)), "gpt-4o-mini").analyse("text", context)
    assert len(servers.openai.chat_requests) == 1, "a summary is worth sending as it is"
    assert analysis.summary == "Клиент спросил цену" and analysis.score is None, "the model's own score is ignored"
    assert {r.verdict for r in analysis.rubric} == {"not_assessed"} and not analysis.summary_missing


# --- Telegram --------------------------------------------------------------------------------


def test_messages_go_in_the_post_body_not_the_url(servers: Servers) -> None:
    notifier = build_notifier(config_for(servers))
    text = "<b>Итог</b>\n" + "Длинный русский текст. " * 170  # ~3900 characters, ~23 KB URL-encoded
    assert notifier.send(text) == 1
    (request,) = servers.telegram.requests_to("sendMessage")
    assert request.query == {} and len(request.body) > 20_000
    assert servers.telegram.messages[0]["text"] == text


def test_telegram_errors_are_classed_without_the_token(servers: Servers) -> None:
    notifier = build_notifier(config_for(servers))
    servers.telegram.fail_next(
        "sendMessage",
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 7",
            "parameters": {"retry_after": 7},
        },
    )
    with pytest.raises(TransientError) as caught:
        notifier.send("hi")
    assert caught.value.retry_after == 7
    servers.telegram.known_chats = set()
    with pytest.raises(FatalError, match="chat not found"):
        notifier.send("hi")
    servers.telegram.stop()
    with pytest.raises(TransientError) as unreachable:
        notifier.send("hi")
    for secret in SECRETS:
        assert secret not in str(unreachable.value)


def test_group_migration_is_followed(servers: Servers) -> None:
    servers.telegram.migrate_chats = {CHAT_ID: -1009999}
    servers.telegram.known_chats = {CHAT_ID, "-1009999"}
    notifier = build_notifier(config_for(servers))
    notifier.send("hello")
    assert servers.telegram.messages[0]["chat_id"] == "-1009999" and notifier.chat_id == "-1009999"


def test_a_wrong_bot_token_is_fatal(servers: Servers) -> None:
    config = config_for(servers)
    servers.telegram.token = "999:OTHER"  # the server now expects another bot
    with pytest.raises(FatalError, match="bot token"):
        build_notifier(config).check()
    assert BOT_TOKEN  # the config still carries ours; the error text does not (checked above)


def test_a_404_on_one_entity_type_is_not_fatal(servers: Servers) -> None:
    servers.amo.fail_next("/api/v4/customers/notes", 404, "<html>Not Found</html>")
    servers.amo.fail_next("/api/v4/customers$", 404, "<html>Not Found</html>")
    amo = amo_client(servers)
    with pytest.raises(PermanentError, match="404 for customers"):
        amo.call_notes("customers", [1])
    with pytest.raises(PermanentError, match="404 for customers"):
        amo.entity_names("customers", [1])
    servers.amo.fail_next("/api/v4/events", 404, "<html>Not Found</html>")
    with pytest.raises(FatalError, match=re.escape("check amocrm.base_url")):
        amo.call_events(NOW - 60, NOW)


def test_check_names_the_chat(servers: Servers) -> None:
    notifier = build_notifier(config_for(servers))
    assert notifier.check() == "@salesbot_test_bot in 'Sales'"
    servers.telegram.known_chats = set()
    expected = f"getChat {CHAT_ID}: Bad Request: chat not found: check telegram.chat_id"
    with pytest.raises(FatalError, match=re.escape(expected)):
        notifier.check()
