"""`salesbot-poller demo`: the README's "try it" command, end to end in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from salesbot_poller.sandbox.canned import canned_analysis
from salesbot_poller.services.telegram_text import plain_text


@pytest.mark.slow
def test_demo_prints_the_card_and_the_alert_without_config_or_network(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESBOT_", "CREDENTIALS_"))}
    # Any request that is not to 127.0.0.1 goes to a dead proxy and fails: no network used.
    dead = "http://127.0.0.1:9"
    env |= {"HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead, "https_proxy": dead}
    env |= {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1", "TMPDIR": str(tmp_path), "TZ": "UTC"}
    env["SALESBOT_CONFIG"] = str(tmp_path / "no-such-config.toml")  # the demo must not read it
    done = subprocess.run(
        [sys.executable, "-m", "salesbot_poller", "demo"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "cycle: events=2 new=2 transcribed=1 notified=1 missed_alerts=1 failed=0" in out
    # The missed call's alert goes first: it never waits for an answered call's analysis.
    alert, card = out.split("── Telegram message 1 of 2")[1].split("── Telegram message 2 of 2")
    analysis = canned_analysis()
    assert "📥 Входящий звонок · 2:05" in card and "👤 Менеджер: Иван Петров" in card
    assert f"⭐ Оценка: {analysis.score}/100" in card and analysis.summary in card
    assert all(f"• {o.objection} → {o.handling}" in card for o in analysis.objections)
    assert all(result.title in card for result in analysis.rubric) and "#стеллажи" in card
    assert "💼 Сделка: ООО «Ромашка»: поставка стеллажей (http://127.0.0.1:" in card
    assert "🔴 Пропущенный звонок" in alert and "☎️ +7 999 111-00-04 — перезвоните клиенту" in alert
    assert "👤 Ответственный: Мария Соколова" in alert
    assert "<b>" not in out and "&lt;" not in out  # shown as Telegram shows it
    assert list(tmp_path.iterdir()) == []  # the temporary directory is gone, nothing left behind


def test_plain_text_drops_tags_decodes_entities_and_keeps_link_targets() -> None:
    html = '<b>Итог</b>\n💼 <a href="https://x.amocrm.ru/leads/detail/1">ООО &lt;Р&gt; &amp; Ко</a>'
    assert plain_text(html) == "Итог\n💼 ООО <Р> & Ко (https://x.amocrm.ru/leads/detail/1)"
