"""Self-tests of tests/fakes: each fake is driven by the real client it stands in for."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import openai
import pydantic
import pytest
import requests
import telebot
from telebot import apihelper

from tests.fakes import (
    FakeAmoCRM,
    FakeOpenAI,
    FakeRecordings,
    FakeTelegram,
    TelegramHTMLError,
    make_mp3,
    make_wav,
    utf16_len,
    validate_telegram_html,
)

TOKEN = "amo-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHAT = "-1001234567890"


# fixtures ----------------------------------------------------------------------------------
@pytest.fixture
def amo() -> Iterator[FakeAmoCRM]:
    with FakeAmoCRM(token=TOKEN) as fake:
        yield fake
    assert fake.errors == [], "the fake itself crashed"


@pytest.fixture
def recs() -> Iterator[FakeRecordings]:
    with FakeRecordings() as fake:
        yield fake
    assert fake.errors == [], "the fake itself crashed"


@pytest.fixture
def oai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake
    assert fake.errors == [], "the fake itself crashed"


@pytest.fixture
def client(oai: FakeOpenAI) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test-key", base_url=oai.base_url + "/v1", max_retries=0, timeout=5)


@pytest.fixture
def tg() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake
    assert fake.errors == [], "the fake itself crashed"


@pytest.fixture
def bot(tg: FakeTelegram) -> Iterator[telebot.TeleBot]:
    previous = apihelper.API_URL
    apihelper.API_URL = tg.api_url  # type: ignore[assignment]  # typed as None upstream
    try:
        yield telebot.TeleBot("123:TEST", threaded=False)
    finally:
        apihelper.API_URL = previous


# amoCRM ------------------------------------------------------------------------------------
def add_calls(amo: FakeAmoCRM, n: int, start: int = 1795600000) -> list[str]:
    return [
        amo.add_call(
            entity_id=7000 + i,
            note_id=100 + i,
            duration=60 + i,
            phone=f"+7999000000{i}",
            link=f"https://rec.example/{i}.mp3",
            created_at=start + 10 * (n - i),
            direction="in" if i % 2 else "out",
        )
        for i in range(n)
    ]


def test_amocrm_events_paging_follows_next_until_absent_then_204(amo: FakeAmoCRM) -> None:
    ids = add_calls(amo, 6)
    url: str | None = amo.url("/api/v4/events?filter[type]=incoming_call,outgoing_call&limit=2")
    pages = []
    while url:
        r = requests.get(url, headers=AUTH, timeout=5)
        assert r.status_code == 200
        pages.append([e["id"] for e in r.json()["_embedded"]["events"]])
        url = r.json()["_links"].get("next", {}).get("href")
    assert len(pages) == 3 and all(len(p) == 2 for p in pages)
    assert [i for p in pages for i in p] == list(reversed(ids)), "sorted by created_at asc"
    assert all(len(i) == 26 and isinstance(i, str) for i in ids)
    r = requests.get(amo.url("/api/v4/events"), params={"limit": 2, "page": 4}, headers=AUTH, timeout=5)
    assert r.status_code == 204 and r.content == b""
    assert requests.get(amo.url("/api/v4/events?limit=101"), headers=AUTH, timeout=5).status_code == 400


def test_amocrm_event_shape_and_filter_forms(amo: FakeAmoCRM) -> None:
    add_calls(amo, 4, start=1000)  # created_at 1040, 1030, 1020, 1010
    comma = requests.get(
        amo.url("/api/v4/events"),
        headers=AUTH,
        timeout=5,
        params={"filter[type]": "incoming_call", "filter[created_at][from]": "1020", "filter[created_at][to]": "1040"},
    ).json()["_embedded"]["events"]
    brackets = requests.get(
        amo.url("/api/v4/events"),
        headers=AUTH,
        timeout=5,
        params={
            "filter[type][]": ["incoming_call"],
            "filter[created_at][from]": "1020",
            "filter[created_at][to]": "1040",
        },
    ).json()["_embedded"]["events"]
    assert comma == brackets
    assert [e["created_at"] for e in comma] == [1030], "inclusive bounds, type filtered"
    event = comma[0]
    assert event["entity_type"] == "lead" and event["value_after"] == [{"note": {"id": 101}}]
    assert event["type"] == "incoming_call" and event["created_by"] == 0


def test_amocrm_notes_batch_by_ids_and_single_note(amo: FakeAmoCRM) -> None:
    add_calls(amo, 3)
    amo.add_call(
        entity_type="contact",
        entity_id=9,
        note_id=555,
        duration=0,
        phone="+7999",
        link=None,
        call_status=6,
        created_at=1795600000,
    )
    r = requests.get(
        amo.url("/api/v4/leads/notes"), headers=AUTH, timeout=5, params={"filter[id][]": ["100", "102"], "limit": "250"}
    )
    notes = r.json()["_embedded"]["notes"]
    assert [n["id"] for n in notes] == [100, 102]
    assert notes[0]["note_type"] == "call_out" and notes[0]["params"]["duration"] == 60
    comma = requests.get(amo.url("/api/v4/leads/notes?filter[id]=100,102"), headers=AUTH, timeout=5).json()[
        "_embedded"
    ]["notes"]
    assert comma == notes
    none = requests.get(amo.url("/api/v4/leads/notes?filter[id][]=555"), headers=AUTH, timeout=5)
    assert none.status_code == 204
    note = requests.get(amo.url("/api/v4/contacts/9/notes/555"), headers=AUTH, timeout=5).json()
    assert note["note_type"] == "call_in" and "link" not in note["params"]
    amo.set_note_link("contacts", 555, "https://rec.example/late.mp3")
    again = requests.get(amo.url("/api/v4/contacts/notes/555"), headers=AUTH, timeout=5).json()
    assert again["params"]["link"] == "https://rec.example/late.mp3"
    assert again["updated_at"] > note["updated_at"]


def test_amocrm_users_entities_and_errors(amo: FakeAmoCRM) -> None:
    amo.add_user(5, "Иван")
    amo.add_entity("lead", 7001, "Сделка", responsible_user_id=5, price=1000)
    users = requests.get(amo.url("/api/v4/users"), headers=AUTH, timeout=5).json()
    assert users["_embedded"]["users"][0]["name"] == "Иван"
    leads = requests.get(amo.url("/api/v4/leads?filter[id][]=7001"), headers=AUTH, timeout=5)
    assert leads.json()["_embedded"]["leads"][0]["price"] == 1000
    assert requests.get(amo.url("/api/v4/leads/1"), headers=AUTH, timeout=5).status_code == 204
    amo.users_forbidden = True
    assert requests.get(amo.url("/api/v4/users"), headers=AUTH, timeout=5).status_code == 403
    assert requests.get(amo.url("/api/v4/nope"), headers=AUTH, timeout=5).status_code == 404


def test_amocrm_bad_token_is_401_problem_json(amo: FakeAmoCRM) -> None:
    r = requests.get(amo.url("/api/v4/account"), headers={"Authorization": "Bearer nope"}, timeout=5)
    assert r.status_code == 401
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.json()["status"] == 401 and r.json()["title"] == "Unauthorized"
    ok = requests.get(amo.url("/api/v4/account"), headers=AUTH, timeout=5)
    assert ok.json()["subdomain"] == "acme"


def test_amocrm_refresh_token_is_single_use(amo: FakeAmoCRM) -> None:
    form = {
        "client_id": "cid",
        "client_secret": "csecret",
        "grant_type": "refresh_token",
        "refresh_token": "refresh-1",
        "redirect_uri": "https://example.com/cb",
    }
    first = requests.post(amo.url("/oauth2/access_token"), json=form, timeout=5)
    assert first.status_code == 200
    pair = first.json()
    assert pair["token_type"] == "Bearer" and pair["expires_in"] == 86400
    assert amo.issued_refresh_tokens == [pair["refresh_token"]]
    new_auth = {"Authorization": f"Bearer {pair['access_token']}"}
    assert requests.get(amo.url("/api/v4/account"), headers=new_auth, timeout=5).ok
    reused = requests.post(amo.url("/oauth2/access_token"), data=form, timeout=5)
    assert reused.status_code == 400 and reused.json()["hint"] == "Token has been revoked"
    form["refresh_token"] = pair["refresh_token"]
    assert requests.post(amo.url("/oauth2/access_token"), data=form, timeout=5).ok, "form body"
    amo.valid_codes.add("code-1")
    code = {**form, "grant_type": "authorization_code", "code": "code-1"}
    assert requests.post(amo.url("/oauth2/access_token"), json=code, timeout=5).ok
    assert requests.post(amo.url("/oauth2/access_token"), json=code, timeout=5).status_code == 400
    form["client_secret"] = "wrong"
    assert requests.post(amo.url("/oauth2/access_token"), data=form, timeout=5).status_code == 401


def test_amocrm_rate_accounting_and_enforcement(amo: FakeAmoCRM) -> None:
    with requests.Session() as s:
        for _ in range(8):
            s.get(amo.url("/api/v4/account"), headers=AUTH, timeout=5)
        assert amo.rate_violations() == 1
        amo.enforce_rate_limit = True
        r = s.get(amo.url("/api/v4/account"), headers=AUTH, timeout=5)
    assert r.status_code == 429 and "Retry-After" not in r.headers
    assert r.headers["Content-Type"].startswith("text/html")
    assert amo.rate_violations() == 2


def test_fail_next_and_delay_next(amo: FakeAmoCRM) -> None:
    amo.fail_next(r"/api/v4/account", 504, "<html>Gateway Timeout</html>", times=2)
    amo.delay_next(r"/api/v4/account", 0.2)
    codes = [requests.get(amo.url("/api/v4/account"), headers=AUTH, timeout=5).status_code for _ in range(2)]
    started = time.monotonic()
    last = requests.get(amo.url("/api/v4/account"), headers=AUTH, timeout=5)
    assert codes == [504, 504] and last.status_code == 200
    assert time.monotonic() - started < 1.0
    assert amo.count(r"/api/v4/account", "GET") == 3
    assert amo.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


# recordings --------------------------------------------------------------------------------
def test_recordings_redirect_404_and_no_auth_header(recs: FakeRecordings) -> None:
    audio = make_mp3(1.0)
    recs.add("/files/1.mp3", audio)
    url = recs.add_redirect("/r/1", "/files/1.mp3")
    r = requests.get(url, timeout=5)
    assert r.status_code == 200 and r.content == audio
    assert r.headers["Content-Type"] == "audio/mpeg"
    assert r.headers["Content-Length"] == str(len(audio)) and r.history[0].status_code == 302
    assert requests.get(recs.url("/missing.mp3"), timeout=5).status_code == 404
    recs.fail_next(r"/files/", 404, times=2)
    assert [requests.get(recs.url("/files/1.mp3"), timeout=5).status_code for _ in range(3)] == [404, 404, 200]
    head = requests.head(recs.url("/files/1.mp3"), timeout=5)
    assert head.headers["Content-Length"] == str(len(audio)) and head.content == b""
    assert recs.authorization_headers_seen() == []
    requests.get(recs.url("/files/1.mp3"), headers={"Authorization": "Bearer leak"}, timeout=5)
    assert recs.authorization_headers_seen() == ["Bearer leak"]


def test_recordings_with_query_and_truncated_stream(recs: FakeRecordings) -> None:
    url = recs.add("/api/crm/record?id=7&hash=abc", b"<html>User is not licensed</html>", content_type="text/html")
    assert requests.get(url, timeout=5).text == "<html>User is not licensed</html>"
    recs.add("/cut.mp3", b"x" * 100_000, truncate_at=1000)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):  # IncompleteRead
        requests.get(recs.url("/cut.mp3"), timeout=5)


# OpenAI ------------------------------------------------------------------------------------
class Analysis(pydantic.BaseModel):
    summary: str
    topic: str
    client_needs: list[str]
    sentiment: str


def test_openai_transcription_json_text_and_verbose(client: openai.OpenAI, oai: FakeOpenAI) -> None:
    audio = make_mp3(2.0)
    result = client.audio.transcriptions.create(
        file=("call.mp3", audio, "audio/mpeg"), model="whisper-1", language="ru"
    )
    assert f"[{len(audio)} байт, {hashlib.sha1(audio).hexdigest()[:8]}]" in result.text
    record = oai.transcriptions[0]
    assert record["filename"] == "call.mp3" and record["size"] == len(audio)
    assert record["fields"]["language"] == "ru" and record["fields"]["model"] == "whisper-1"
    text = client.audio.transcriptions.create(
        file=("call.wav", make_wav(1.0), "audio/wav"), model="whisper-1", response_format="text"
    )
    assert isinstance(text, str) and text.startswith("Менеджер:")
    verbose = client.audio.transcriptions.create(
        file=("call.mp3", audio, "audio/mpeg"), model="whisper-1", response_format="verbose_json"
    )
    assert abs(verbose.duration - 2.0) < 0.1 and verbose.segments
    assert verbose.segments[0].end == verbose.duration


def test_openai_rejects_undecodable_audio(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(
            file=("call.mp3", b"<html>User is not licensed</html>", "audio/mpeg"), model="whisper-1"
        )
    assert "could not be decoded" in str(info.value)


def test_openai_chat_parse_into_pydantic(client: openai.OpenAI, oai: FakeOpenAI) -> None:
    completion = client.chat.completions.parse(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Ты аналитик звонков."},
            {"role": "user", "content": "Расшифровка: Менеджер: Добрый день!"},
        ],
        response_format=Analysis,
    )
    parsed = completion.choices[0].message.parsed
    assert parsed is not None and parsed.topic == "поставка"
    assert parsed.summary == "Итог: Расшифровка: Менеджер: Добрый день!"
    assert completion.model == "gpt-4o-mini" and completion.usage is not None
    sent = oai.chat_requests[0]
    assert sent["response_format"]["type"] == "json_schema"
    oai.analysis_fn = lambda body: {"summary": "x", "topic": "t", "client_needs": [], "sentiment": "neutral"}
    again = client.chat.completions.parse(
        model="gpt-4o-mini", response_format=Analysis, messages=[{"role": "user", "content": "t"}]
    )
    assert again.choices[0].message.parsed == Analysis(summary="x", topic="t", client_needs=[], sentiment="neutral")


def test_openai_models_and_bad_key(client: openai.OpenAI, oai: FakeOpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "whisper-1" in ids and "gpt-4o-mini" in ids
    bad = openai.OpenAI(api_key="sk-wrong", base_url=oai.base_url + "/v1", max_retries=0, timeout=5)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.models.list()
    assert "sk-wrong" not in str(info.value) and info.value.code == "invalid_api_key"


# Telegram ----------------------------------------------------------------------------------
def test_telegram_get_me_and_html_message(bot: telebot.TeleBot, tg: FakeTelegram) -> None:
    me = bot.get_me()
    wrong = requests.get(tg.api_url.format("999:WRONG", "getMe"), timeout=5)
    assert wrong.status_code == 401 and wrong.json()["description"] == "Unauthorized"
    assert me.username == "salesbot_test_bot" and me.is_bot
    msg = bot.send_message(CHAT, "<b>a &amp; b</b>", parse_mode="HTML")
    assert msg.message_id == 1 and msg.text == "a & b" and msg.chat.id == int(CHAT)
    stored = tg.messages[0]
    assert stored["text"] == "<b>a &amp; b</b>" and stored["visible_text"] == "a & b"
    assert stored["parse_mode"] == "HTML" and stored["chat_id"] == CHAT


def test_telegram_rejects_bad_html_unknown_chat_and_long_text(bot: telebot.TeleBot, tg: FakeTelegram) -> None:
    with pytest.raises(apihelper.ApiTelegramException) as info:
        bot.send_message(CHAT, "<x>", parse_mode="HTML")
    assert info.value.error_code == 400 and "can't parse entities" in info.value.description
    with pytest.raises(apihelper.ApiTelegramException) as info:
        bot.send_message("-100999", "hi")
    assert info.value.description == "Bad Request: chat not found"
    with pytest.raises(apihelper.ApiTelegramException) as info:
        bot.send_message(CHAT, "a" * 4097)
    assert info.value.description == "Bad Request: message is too long"
    # A JSON body is accepted too; the limit counts UTF-16 units (an emoji is 2).
    url = tg.api_url.format("123:TEST", "sendMessage")
    r = requests.post(url, json={"chat_id": CHAT, "text": "😀" * 2049}, timeout=5)
    assert r.status_code == 400 and r.json()["description"] == "Bad Request: message is too long"
    r = requests.post(url, json={"chat_id": CHAT, "text": "<b>  </b>", "parse_mode": "HTML"}, timeout=5)
    assert r.json()["description"] == "Bad Request: message text is empty"
    tg.migrate_chats["-42"] = -100777
    with pytest.raises(apihelper.ApiTelegramException) as info:
        bot.send_message("-42", "hi")
    assert info.value.result_json["parameters"]["migrate_to_chat_id"] == -100777
    assert tg.messages == []


def test_telegram_429_retry_after_and_414(bot: telebot.TeleBot, tg: FakeTelegram) -> None:
    tg.fail_next(
        r"/sendMessage$",
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 3",
            "parameters": {"retry_after": 3},
        },
    )
    with pytest.raises(apihelper.ApiTelegramException) as info:
        bot.send_message(CHAT, "hi")
    assert info.value.error_code == 429
    assert info.value.result_json["parameters"]["retry_after"] == 3
    assert bot.send_message(CHAT, "hi").message_id == 1
    with pytest.raises(apihelper.ApiHTTPException) as http:
        bot.send_message(CHAT, "Ж" * 1400)  # ~8.4 KB of URL-encoded Cyrillic
    assert http.value.result.status_code == 414


def test_telegram_send_document(bot: telebot.TeleBot, tg: FakeTelegram) -> None:
    msg = bot.send_document(CHAT, ("transcript.txt", "Текст".encode()), caption="<i>Расшифровка</i>", parse_mode="HTML")
    assert msg.document is not None and msg.document.file_name == "transcript.txt"
    assert msg.caption == "Расшифровка"
    assert tg.documents[0]["bytes"] == "Текст".encode()
    assert tg.documents[0]["filename"] == "transcript.txt"


# HTML validator ----------------------------------------------------------------------------
def test_validator_accepts_nested_markup_and_decodes_entities() -> None:
    text = (
        '<b>Итог <i>звонка</i></b> <a href="https://x.ru/?a=1&amp;b=2">ссылка</a> '
        '<span class="tg-spoiler">s</span><tg-spoiler>t</tg-spoiler> '
        '<pre><code class="language-python">x &lt; 1</code></pre>'
        '<blockquote expandable>q</blockquote><tg-emoji emoji-id="5368324170671202286">'
        "👍</tg-emoji> &lt;&gt;&amp;&quot;&#65;&#x1F600; <STRONG>B</STRONG>"
    )
    assert validate_telegram_html(text) == ('Итог звонка ссылка st x < 1q👍 <>&"A😀 B')


@pytest.mark.parametrize(
    "bad",
    [
        "<x>hi</x>",
        "a < b",
        "a & b",
        "a > b",
        "<b>open",
        "<b><i>x</b></i>",
        "<a>no href</a>",
        "</b>",
        '<span class="other">x</span>',
        "&nbsp;",
        "<b",
        "<a href=x>y</a>",
    ],
)
def test_validator_rejects(bad: str) -> None:
    with pytest.raises(TelegramHTMLError):
        validate_telegram_html(bad)


def test_validator_reasons_and_utf16() -> None:
    with pytest.raises(TelegramHTMLError, match="bare &"):
        validate_telegram_html("Пётр & сын")
    with pytest.raises(TelegramHTMLError, match='Unsupported start tag "x"'):
        validate_telegram_html("<x>")
    assert utf16_len("😀") == 2 and utf16_len("аб") == 2 and utf16_len("") == 0
