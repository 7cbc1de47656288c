"""Trackers around the matcher: hits stored with the transcript, the alert sent at once
(before the card) through the real Telegram client and fake server, the card's lines, and
`trackers --apply` giving the same hits as live matching."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from salesbot_poller.cli.main import main
from salesbot_poller.config import TrackerConfig
from salesbot_poller.domain import CallEvent, CallNote
from salesbot_poller.lanes import run_once
from salesbot_poller.pipeline import tracking
from salesbot_poller.pipeline.tracker_messages import card_lines
from salesbot_poller.store import Call, Store, TrackerHit, TrackerMiss
from salesbot_poller.trackers import Hit, Matcher
from tests.builder import Rig, build_rig
from tests.conftest import Servers, run_cli
from tests.fakes import make_mp3, validate_telegram_html

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)

TRACKERS = """
[[trackers]]
name = "Конкурент"
phrases = ["у конкурентов дешевле"]
speaker = "any"
alert = true
[[trackers]]
name = "Скидка"
phrases = ["скидку"]
[[trackers]]
name = "Запись разговора"
phrases = ["разговор записывается"]
expect = true
"""
SAID = "Здравствуйте, у конкурентов дешевле. Дайте скидку, хоть какую скидку."


@pytest.mark.postgres
def test_a_tracker_alert_reaches_the_chat_before_the_card_and_only_once(servers: Servers) -> None:
    now = int(datetime.now(UTC).timestamp())
    servers.amo.add_user(555, "Иван Петров")
    servers.amo.add_entity("lead", 7001, "ООО Ромашка", 555)
    servers.amo.add_call(
        entity_type="lead",
        entity_id=7001,
        note_id=101,
        duration=125,
        phone="+79991110001",
        link=servers.recordings.add("/mango/rec-101.mp3", make_mp3(3.0)),
        created_at=now - 600,
        responsible_user_id=555,
    )
    servers.openai.transcribe_fn = lambda data, name, fields: SAID  # mono: no roles, no times
    config = servers.write_config()
    config.write_text(config.read_text() + TRACKERS)

    first = run_cli("once", config=config)
    assert first.returncode == 0, first.stderr

    messages = servers.telegram.messages
    assert len(messages) == 2, [m["visible_text"] for m in messages]
    alert, card = messages[0]["visible_text"], messages[1]["visible_text"]
    assert "🏷 Конкурент · Иван Петров · «у конкурентов дешевле»\n💼 Сделка: ООО Ромашка" in alert
    assert "ООО Ромашка" in alert and "Скидка" not in alert, "only trackers with alert = true are alerted"
    assert "Итог" in card
    assert "🏷 Конкурент: «у конкурентов дешевле»\n" in card
    assert "🏷 Скидка ×2: «скидку»\n" in card
    assert "⚠️ не сказано: Запись разговора" in card
    for message in messages:
        validate_telegram_html(message["text"])

    again = run_cli("once", config=config)
    assert again.returncode == 0, again.stderr
    assert len(servers.telegram.messages) == 2, "the alert goes once"
    store = Store.open(servers.database, now)
    try:
        hits = [(h.tracker, h.phrase, h.at) for h in TrackerHit.select().order_by(TrackerHit.position)]
        assert hits == [
            ("Конкурент", "у конкурентов дешевле", None),
            ("Скидка", "скидку", None),
            ("Скидка", "скидку", None),
        ]
        assert [m.tracker for m in TrackerMiss.select()] == ["Запись разговора"]
    finally:
        store.close()


# --- in-memory services, a real store ------------------------------------------------------


def event(n: int, minutes: float = -10) -> CallEvent:
    return CallEvent(
        f"01EVENT{n:019d}", "in", "leads", 7000 + n, 100 + n, int((T0 + timedelta(minutes=minutes)).timestamp())
    )


def note(n: int) -> CallNote:
    return CallNote(100 + n, 125, "+79991234567", f"https://rec.example/{n}.mp3", 4, "MangoOfficeWidget", 555, None)


def tracked(rig: Rig, trackers: list[TrackerConfig]) -> Rig:
    rig.app.config = rig.app.config.model_copy(update={"trackers": trackers})
    rig.app.matcher = None
    return rig


OLD = [
    TrackerConfig(name="Конкурент", phrases=["у конкурентов дешевле"], alert=True),
    TrackerConfig(name="Запись разговора", phrases=["разговор записывается"], expect=True),
]
NEW = [
    TrackerConfig(name="Конкурент", phrases=["у конкурентов дешевле", "Стеллаж-Мастер"], alert=True),
    TrackerConfig(name="Скидка", phrases=["скидку"], speaker="client"),
    TrackerConfig(name="Запись разговора", phrases=["разговор записывается"], expect=True),
]
TEXTS = [
    "[00:02] Менеджер: Добрый день, разговор записывается.\n[03:12] Клиент: У Стеллаж-Мастер дешевле, дайте скидку.",
    "Менеджер: Добрый день.\nКлиент: у конкурентов дешевле.",
    "Менеджер: Скидку дадим.\nКлиент: Хорошо.",
]


def stored_trackers(store: Store) -> list[tuple[object, ...]]:
    events = {call.id: call.event_id for call in Call.select(Call.id, Call.event_id)}
    hits = [(events[h.call_id], h.position, h.tracker, h.speaker, h.at, h.phrase) for h in TrackerHit.select()]
    misses = [(events[m.call_id], "missing", m.tracker) for m in TrackerMiss.select()]
    return sorted(hits) + sorted(misses)  # type: ignore[type-var]


def processed(where: Path, trackers: list[TrackerConfig]) -> Rig:
    rig = tracked(build_rig(where, now=T0), trackers)
    for n in range(1, len(TEXTS) + 1):
        rig.source.add(event(n), note(n), f"Сделка {n}")

    def transcribe(audio: Path, meter: object = None, keep: object = None) -> object:
        rig.transcriber.calls.append(audio)
        from salesbot_poller.domain import Transcript

        call_id = int(audio.stem.removeprefix("call-"))  # the same text for the same call, whatever the order
        return Transcript(text=TEXTS[call_id - 1])

    rig.transcriber.transcribe = transcribe  # type: ignore[method-assign, assignment]
    run_once(rig.app, T0)
    return rig


def test_changed_trackers_reapplied_over_stored_calls_give_the_hits_of_live_matching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = processed(tmp_path / "live", NEW)
    expected = stored_trackers(live.app.store)
    live.app.store.close()
    assert any(row[2] == "Скидка" for row in expected) and any(row[5] == "Стеллаж-Мастер" for row in expected)

    old = processed(tmp_path / "old", OLD)
    store = old.app.store
    sent = list(old.notifier.sent)
    assert stored_trackers(store) != expected
    tracked(old, NEW)
    start, end = int((T0 - timedelta(days=1)).timestamp()), int((T0 + timedelta(days=1)).timestamp())
    monkeypatch.setattr(tracking, "PAGE", 1)
    lines: list[str] = []
    stops = iter([False, True])  # interrupted after its second page
    assert tracking.reapply(store, old.app.config, Matcher(NEW), start, end, lines.append, lambda: next(stops)) == 2
    assert lines == ["trackers: 1 of 3 call(s) (up to call 1)", "trackers: 2 of 3 call(s) (up to call 2)"]
    assert tracking.reapply(store, old.app.config, Matcher(NEW), start, end, lines.append) == 1, "it resumes"
    assert lines[-1] == "trackers: 3 of 3 call(s) (up to call 3)"
    assert stored_trackers(store) == expected
    assert tracking.reapply(store, old.app.config, Matcher(NEW), start, end, lines.append) is None, "nothing to do"
    assert old.notifier.sent == sent, "no alert for old calls"
    (bi_counts,) = store.db.execute_sql("SELECT SUM(tracker_hits), SUM(tracker_missing) FROM bi_call").fetchall()  # type: ignore[no-untyped-call]
    assert tuple(bi_counts) == (
        sum(1 for row in expected if row[1] != "missing"),
        sum(1 for row in expected if row[1] == "missing"),
    )
    store.close()


def test_a_rerun_of_the_transcript_stage_replaces_the_hits_never_doubles_them(tmp_path: Path) -> None:
    rig = processed(tmp_path, NEW)
    store = rig.app.store
    before = stored_trackers(store)
    call = Call.get(Call.id == 1)
    hits = [Hit("Скидка", "client", "скидку", 5.0)]
    store.replace_trackers(call.id, hits, [])
    store.replace_trackers(call.id, hits, [])
    assert [(h.tracker, h.at) for h in TrackerHit.select().where(TrackerHit.call_id == 1)] == [("Скидка", 5)]
    assert len(stored_trackers(store)) < len(before)
    store.close()


def test_card_lines_count_hits_cut_long_words_and_escape_them() -> None:
    hits = [
        Hit("Конкурент <b>", "client", "у конкурентов & дешевле", 192.0),
        Hit("Скидка", "client", "скидку", None),
        Hit("Конкурент <b>", "client", "у конкурентов дешевле", 300.0),
        Hit("Длинный", "", "слово " * 100, 3700.0),
    ]
    lines = card_lines(hits, ["Обязательная фраза: запись разговора"])
    assert lines[0] == "🏷 Конкурент &lt;b&gt; ×2: «у конкурентов &amp; дешевле» (03:12)"
    assert lines[1] == "🏷 Скидка: «скидку»"
    assert lines[2].endswith("…» (1:01:40)") and len(lines[2]) < 130
    assert lines[3] == "⚠️ не сказано: Обязательная фраза: запись разговора"
    many = card_lines([Hit(f"T{n}", "", "слово", None) for n in range(12)], [])
    assert len(many) == 9 and many[-1] == "🏷 … и ещё трекеров: 4"


def test_removing_personal_data_blanks_the_words_of_the_hits_and_keeps_the_counts(tmp_path: Path) -> None:
    rig = processed(tmp_path, NEW)
    store = rig.app.store
    before = [(h.tracker, h.speaker, h.at) for h in TrackerHit.select().order_by(TrackerHit.id)]
    store.clear_personal(list(Call.select()), int(T0.timestamp()) + 60, "forget")
    after = list(TrackerHit.select().order_by(TrackerHit.id))
    assert [(h.tracker, h.speaker, h.at) for h in after] == before and before
    assert {h.phrase for h in after} == {""}
    rows = store.db.execute_sql("SELECT SUM(tracker_hits) FROM bi_call").fetchall()  # type: ignore[no-untyped-call]
    assert rows[0][0] == len(before)
    store.close()


def test_the_trackers_command_applies_the_current_trackers_then_has_nothing_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = processed(tmp_path, OLD)
    old.app.store.close()
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[amocrm]
base_url = "https://acme.amocrm.ru"
long_lived_token = "amo-token"
[openai]
api_key = "sk-key"
[telegram]
bot_token = "123:TEST"
chat_id = "-100"
[storage]
database = "sqlite:///{tmp_path}/db.sqlite"
audio_dir = "{tmp_path}/audio"
"""
        + "".join(
            f'[[trackers]]\nname = "{t.name}"\nphrases = {json.dumps(t.phrases, ensure_ascii=False)}\n'
            f'speaker = "{t.speaker}"\nalert = {str(t.alert).lower()}\nexpect = {str(t.expect).lower()}\n'
            for t in NEW
        )
    )
    config.chmod(0o600)
    apply = ["--config", str(config), "trackers", "--apply", "--since", "2026-11-24", "--until", "2026-11-26"]

    assert main(apply) == 0
    out, err = capsys.readouterr()
    assert "trackers: 3 of 3 call(s) (up to call 3)" in err
    assert "trackers: applied to 3 call(s) from 2026-11-24 to 2026-11-26; no alert sent" in out
    assert main(apply) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["--config", str(config), "trackers"]) == 0
    listed = capsys.readouterr().out
    assert "Скидка: " in listed and " call(s) in 30 days · speaker=client · скидку" in listed
    store = Store.open(f"sqlite:///{tmp_path}/db.sqlite", int(T0.timestamp()))
    try:
        assert {h.tracker for h in TrackerHit.select()} == {"Конкурент", "Скидка", "Запись разговора"}
    finally:
        store.close()
    assert main(["--config", str(config), "trackers", "--apply"]) == 2
    assert "--apply needs --since" in capsys.readouterr().err


def test_a_dry_run_prints_the_alert_and_the_cards_tracker_lines_and_sends_nothing(tmp_path: Path) -> None:
    printed: list[str] = []
    rig = tracked(build_rig(tmp_path, now=T0, dry_run=printed), NEW)
    rig.source.add(event(1), note(1), "Сделка 1")
    rig.transcriber.text = "Клиент: у конкурентов дешевле"
    run_once(rig.app, T0)
    assert rig.notifier.sent == []
    alert = next(text for text in printed if "tracker_alert" in text)
    assert "🏷 Конкурент · Иван Петров · «у конкурентов дешевле»" in alert and "[call:1:tracker]" in alert
    card = next(text for text in printed if "[call:1]" in text)
    assert "🏷 Конкурент: «у конкурентов дешевле»" in card and "⚠️ не сказано: Запись разговора" in card
