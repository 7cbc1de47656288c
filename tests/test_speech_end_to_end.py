"""The real `salesbot-poller once` and `status` with a stereo call: the roles come from the
channels (per PBX source), the metrics reach the analysis prompt and the Telegram card, and
`status` shows what the transcription used."""

from __future__ import annotations

import re
import time

import pytest

from tests.conftest import Servers, assert_no_secret, run_cli
from tests.fakes import make_mp3, make_turns_mp3, tone_runs


def heard(data: bytes, filename: str, fields: dict[str, str]) -> list[tuple[float, float, str]]:
    return [(s, e, "Сколько стоит доставка?" if hz < 660 else "Пятьсот рублей.") for s, e, hz in tone_runs(data)]


@pytest.mark.slow
def test_a_stereo_call_is_posted_with_roles_and_metrics_and_counted(servers: Servers) -> None:
    now = int(time.time())
    servers.amo.add_user(555, "Иван Петров")
    servers.amo.add_entity("lead", 7001, "ООО Ромашка", 555)
    call = make_turns_mp3(12, [(0.0, 3.0, 440.0), (7.0, 9.0, 440.0)], [(3.5, 6.5, 880.0), (9.5, 11.0, 880.0)])
    for note_id, source in ((101, "MangoOfficeWidget"), (102, "Sipuni")):
        servers.amo.add_call(
            entity_id=7001,
            note_id=note_id,
            duration=12 + note_id,
            phone="+79991110001",
            link=servers.recordings.add(f"/rec-{note_id}.mp3", call),
            created_at=now - 600 + note_id,
            responsible_user_id=555,
            source=source,
        )
    servers.openai.segments_fn = heard
    config = servers.write_config(workers=1)  # one worker: the calls are analysed and posted in order
    config.write_text(config.read_text() + '[audio]\nmanager_channel_by_source = { "Sipuni" = "right" }\n')

    result = run_cli("once", config=config)
    assert result.returncode == 0, result.stderr
    assert len(servers.openai.transcriptions) == 4, "two channels per call"
    # The two calls are worked side by side: tell them apart by their content, not by order.
    # Timed segments: every line starts with its `[mm:ss]`, left out here.
    prompts = [re.sub(r"\[\d\d:\d\d\] ", "", r["messages"][1]["content"]) for r in servers.openai.chat_requests]
    assert all(re.search(r"^\[00:0\d\] ", r["messages"][1]["content"], re.M) for r in servers.openai.chat_requests)
    mango, sipuni = sorted(prompts, key=lambda p: "Клиент: Сколько стоит доставка?" in p)
    assert "Менеджер: Сколько стоит доставка?\nКлиент: Пятьсот рублей." in mango
    assert "Клиент: Сколько стоит доставка?\nМенеджер: Пятьсот рублей." in sipuni, "Sipuni: manager on the right"
    assert "Метрики разговора" in mango and "вопросов задал менеджер: 2" in mango
    cards = sorted((m["visible_text"] for m in servers.telegram.messages), key=lambda card: "· 1:54 ·" in card)
    assert len(cards) == 2 and all("🗣 Менеджер" in card for card in cards)
    assert "· 1:53 ·" in cards[0] and "вопросов 2" in cards[0] and "вопросов 0" in cards[1]

    status = run_cli("status", config=config)
    assert status.returncode == 0, status.stderr
    assert "openai usage" in status.stdout
    # Four uploads (two channels of two calls) and two analyses, each counted once: audio
    # minutes, and the analysis tokens.
    tokens_in = sum(prompt for prompt, _ in servers.openai.chat_usage)
    tokens_out = sum(completion for _, completion in servers.openai.chat_usage)
    assert len(servers.openai.chat_usage) == 2
    assert f"today       0.8 audio min, {tokens_in} tokens in, {tokens_out} tokens out" in status.stdout, status.stdout
    assert "(6 requests)" in status.stdout, "each upload is its own request"
    assert_no_secret(result.stdout, result.stderr, status.stdout, status.stderr)


@pytest.mark.slow
def test_a_non_audio_page_fails_the_call_at_once(servers: Servers) -> None:
    now = int(time.time())
    servers.amo.add_entity("lead", 7001, "ООО Ромашка", 555)
    link = servers.recordings.add("/api/crm/record?id=1&hash=sig", b"<html>User is not licensed</html>", "text/html")
    servers.amo.add_call(entity_id=7001, note_id=101, duration=60, phone="+7", link=link, created_at=now - 60)
    servers.amo.add_call(
        entity_id=7001,
        note_id=102,
        duration=60,
        phone="+7",
        link=servers.recordings.add("/ok.mp3", make_mp3(2.0)),
        created_at=now - 50,
    )
    config = servers.write_config()
    result = run_cli("once", config=config)
    assert result.returncode == 0, result.stderr
    assert "answered text/html, not audio" in result.stderr and "failed=1" in result.stderr
    status = run_cli("status", config=config)
    assert "failed          1" in status.stdout and "notified        1" in status.stdout
    assert "sig" not in status.stdout
