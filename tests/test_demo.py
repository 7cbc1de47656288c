"""`salesbot-poller demo`: the README's "try it" command, end to end in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from salesbot_poller.sandbox.canned import canned_analysis
from salesbot_poller.services.telegram_text import file_lines, keyboard_line, plain_text


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
    alert, rest = out.split("── Telegram message 1 of 3")[1].split("── Telegram message 2 of 3")
    # The demo's tracker (`Конкурент`, alert = true) is heard: its alert goes before the card.
    tracker, card = rest.split("── Telegram message 3 of 3")
    assert "🏷 Конкурент · Иван Петров · «у конкурентов дешевле»\n💼 Сделка: ООО «Ромашка»" in tracker
    assert "🏷 Конкурент: «у конкурентов дешевле»\n⚠️ не сказано: Запись разговора" in card
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


def test_plain_text_reads_every_tag_telegram_takes_and_decodes_entities_once() -> None:
    message = (
        "<i>a</i> <u>b</u> <s>c</s> <code>x &gt; 1</code>\n<pre>line 1\n  line 2</pre>\n"
        "<blockquote>цитата</blockquote> "
        '<a href="https://e.ru/?a=1&amp;b=&quot;2&quot;">https://e.ru/?a=1&amp;b="2"</a> '
        '<a href="tg://user?id=5">Иван</a> &amp;lt;'
    )
    assert plain_text(message) == (
        'a b c x > 1\nline 1\n  line 2\nцитата https://e.ru/?a=1&b="2" Иван (tg://user?id=5) &lt;'
    )


def test_files_and_buttons_read_as_one_line_each() -> None:
    assert file_lines("photo", "<b>График</b> · 8 недель\nвторая") == ["[photo: График · 8 недель]", "вторая"]
    assert file_lines("document a.txt", "") == ["[document a.txt]"]
    markup = '{"inline_keyboard": [[{"text": "Открыть", "url": "https://e.ru"}], [{"text": "Позже"}]]}'
    assert keyboard_line(markup) == "[Открыть] [Позже]"
    assert keyboard_line(None) is None and keyboard_line({"inline_keyboard": []}) is None
