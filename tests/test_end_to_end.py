"""The issue's acceptance run: the real `salesbot-poller once` against loopback amoCRM,
recording host, OpenAI and Telegram servers, through the real clients."""

from __future__ import annotations

import time

import pytest

from tests.conftest import BOT_TOKEN, CHAT_ID, Servers, assert_no_secret, run_cli
from tests.fakes import make_mp3, validate_telegram_html

pytestmark = pytest.mark.postgres  # each test runs against SQLite and against PostgreSQL


def seed(servers: Servers, now: int) -> None:
    amo, rec = servers.amo, servers.recordings
    amo.add_user(555, "Иван Петров")
    amo.add_user(556, "Мария <Старшая> & Co")
    amo.add_entity("lead", 7001, "ООО <Ромашка> & Partners", 555)
    amo.add_entity("contact", 8001, 'Пётр "Клиент" <VIP>', 556)
    amo.add_entity("contact", 8002, "Анна & Ко", 555)
    amo.add_call(
        entity_type="lead",
        entity_id=7001,
        note_id=101,
        duration=125,
        phone="+79991110001",
        link=rec.add("/mango/rec-101.mp3", make_mp3(3.0)),
        created_at=now - 600,
        responsible_user_id=555,
    )
    amo.add_call(
        entity_type="contact",
        entity_id=8001,
        note_id=102,
        direction="out",
        duration=95,
        phone="+79991110002",
        link=rec.add("/mango/rec-102.mp3", make_mp3(2.0, freq=300.0)),
        created_at=now - 500,
        responsible_user_id=556,
    )
    amo.add_call(
        entity_type="lead",
        entity_id=7001,
        note_id=103,
        duration=4,
        phone="+79991110003",
        link=rec.add("/mango/rec-103.mp3", make_mp3(1.0)),
        created_at=now - 400,
        responsible_user_id=555,
    )
    amo.add_call(
        entity_type="contact",
        entity_id=8002,
        note_id=104,
        duration=0,
        phone="+79991110004",
        link=None,
        call_status=6,
        created_at=now - 300,
        responsible_user_id=555,
    )


@pytest.mark.slow
def test_once_twice_then_a_new_call(servers: Servers) -> None:
    now = int(time.time())
    seed(servers, now)
    config = servers.write_config()

    first = run_cli("once", config=config)
    assert first.returncode == 0, first.stderr
    messages = servers.telegram.messages
    assert len(messages) == 3 and len(servers.openai.transcriptions) == 2
    assert all(m["chat_id"] == CHAT_ID and m["parse_mode"] == "HTML" for m in messages)
    for message in messages:
        validate_telegram_html(message["text"])  # the server accepted it; the test parser agrees
    cards = [m["visible_text"] for m in messages if "Оценка" in m["visible_text"]]
    alerts = [m["visible_text"] for m in messages if "Пропущенный" in m["visible_text"]]
    assert len(cards) == 2 and len(alerts) == 1
    assert any("ООО <Ромашка> & Partners" in c and "Иван Петров" in c and "2:05" in c for c in cards)
    assert any('Пётр "Клиент" <VIP>' in c and "Мария <Старшая> & Co" in c and "Исходящий" in c for c in cards)
    assert "+7 999 111-00-04" in alerts[0] and "Анна & Ко" in alerts[0] and "Иван Петров" in alerts[0]
    assert "/rec-103" not in str(servers.recordings.requests_to(".*")), "the short call is not downloaded"
    assert servers.recordings.authorization_headers_seen() == [], "no amoCRM token sent to the PBX"
    assert "cycle: events=4 new=4 transcribed=2 analysed=2 notified=2 missed_alerts=1 skipped=1" in first.stderr

    second = run_cli("--log-level", "DEBUG", "once", config=config)
    assert second.returncode == 0, second.stderr
    assert len(servers.telegram.messages) == 3 and len(servers.openai.transcriptions) == 2
    assert "new=0 transcribed=0" in second.stderr

    servers.amo.add_call(
        entity_type="lead",
        entity_id=7001,
        note_id=105,
        duration=61,
        phone="+79991110005",
        link=servers.recordings.add("/mango/rec-105.mp3", make_mp3(2.5)),
        created_at=int(time.time()) - 30,
        responsible_user_id=555,
    )
    third = run_cli("once", config=config)
    assert third.returncode == 0, third.stderr
    assert len(servers.telegram.messages) == 4 and len(servers.openai.transcriptions) == 3
    assert "+7 999 ***-**-05" in servers.telegram.messages[-1]["visible_text"], "a card masks the number"
    assert "new=1 transcribed=1 analysed=1 notified=1" in third.stderr

    status = run_cli("status", config=config)
    assert status.returncode == 0, status.stderr
    for line in ("calls: 5", "notified        3", "missed_alerted  1", "skipped         1", "last errors: none"):
        assert line in status.stdout, status.stdout
    assert_no_secret(first.stdout, first.stderr, second.stderr, third.stderr, status.stdout, status.stderr)


@pytest.mark.slow
def test_check_reports_each_service(servers: Servers) -> None:
    config = servers.write_config()
    ok = run_cli("check", config=config)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["config", "amocrm", "openai", "chat model", "telegram"]
    assert "account 'Acme'" in lines[1] and "@salesbot_test_bot" in lines[4]
    assert lines[3] == "chat model: structured output ok (json_schema)"

    servers.amo.valid_tokens = {"another"}
    servers.telegram.known_chats = set()
    servers.openai.api_key = "sk-other"
    bad = run_cli("check", config=config)
    assert bad.returncode == 1
    assert "amocrm: FAILED: amoCRM rejected the long-lived token (401)" in bad.stdout
    assert "openai: FAILED: OpenAI model list: the server at 127.0.0.1:" in bad.stdout
    assert "rejected the key (HTTP 401): set a valid openai.api_key" in bad.stdout
    assert "chat model:" not in bad.stdout  # not probed after the model list failed: same error
    assert f"telegram: FAILED: Telegram getChat {CHAT_ID}: Bad Request: chat not found: check telegram.chat_id" in (
        bad.stdout
    )
    assert_no_secret(bad.stdout, bad.stderr)


@pytest.mark.slow
def test_check_looks_at_every_routed_chat_and_the_alert_chat(servers: Servers) -> None:
    routed, alert = "-1009990000001", "-1009990000002"
    text = servers.config_text().replace(
        "[telegram]\n", f'[telegram]\nalert_chat_id = "{alert}"\nroutes = {{ "555" = {{ chat_id = "{routed}" }} }}\n'
    )
    config = servers.tmp / "routed.toml"
    config.write_text(text)
    (servers.tmp / "state").mkdir(mode=0o700)  # as install.sh makes it: `check` creates nothing
    servers.telegram.known_chats = {CHAT_ID, alert}
    bad = run_cli("check", config=config)
    assert bad.returncode == 1 and f"telegram: FAILED: Telegram getChat {routed}: Bad Request: chat not found" in (
        bad.stdout
    )
    servers.telegram.known_chats = {CHAT_ID, alert, routed}
    ok = run_cli("check", config=config)
    assert ok.returncode == 0 and "in 'Sales', 'Sales', 'Sales'" in ok.stdout, ok.stdout  # all three chats


def test_fatal_auth_error_exits_non_zero_with_one_line(servers: Servers) -> None:
    servers.amo.valid_tokens = set()
    result = run_cli("once", config=servers.write_config())
    assert result.returncode == 3
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("salesbot-poller: amoCRM rejected the long-lived token (401)")
    assert_no_secret(result.stdout, result.stderr)


def test_config_error_names_each_key(servers: Servers) -> None:
    path = servers.tmp / "bad.toml"
    path.write_text(servers.config_text().replace("interval_seconds = 1", "interval_seconds = -5\ntypo = 1"))
    result = run_cli("once", config=path)
    assert result.returncode == 2
    assert "salesbot-poller: config: poller.interval_seconds: Input should be greater than 0" in result.stderr
    assert "salesbot-poller: config: poller.typo: unknown key" in result.stderr
    assert not (servers.tmp / "state").exists(), "nothing is written for a bad config"


@pytest.mark.slow
def test_status_redacts_a_secret_that_reached_a_stored_error(servers: Servers) -> None:
    from salesbot_poller.store import Call, Store

    config = servers.write_config()
    assert run_cli("once", config=config).returncode == 0
    servers.amo.add_call(
        entity_id=7002, note_id=201, duration=60, phone="+7999", link=None, created_at=int(time.time()) - 30
    )
    assert run_cli("once", config=config).returncode == 0
    store = Store.open(servers.database, 0)
    Call.update(last_error=f"unexpected ValueError: bad url /bot{BOT_TOKEN}/x").execute()
    store.close()
    status = run_cli("status", config=config)
    assert "unexpected ValueError: bad url /bot***/x" in status.stdout
    assert_no_secret(status.stdout)
