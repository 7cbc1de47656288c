"""`eval --corrections DIR --since DAY`: the calls people corrected in Telegram become an eval set
that `eval DIR` reads back; numbers are redacted; an unredacting config needs --yes."""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime
from pathlib import Path

from salesbot_poller.cli.evaluate import load_cases
from salesbot_poller.domain import CallAnalysis, RubricResult, rubric_score
from salesbot_poller.reports import corrections_block, weekly
from salesbot_poller.reports.corrections_block import Check, agreement_line
from salesbot_poller.store import Call, Store
from tests.builder import build_rig
from tests.conftest import run_cli
from tests.test_config_files import write_config

DEC_1 = int(datetime(2026, 12, 1, 10, tzinfo=UTC).timestamp())
DEC_3 = int(datetime(2026, 12, 3, 10, tzinfo=UTC).timestamp())
TRANSCRIPT = (
    "[00:04] Менеджер: Компания Окна, Иван, здравствуйте\n"
    "[00:09] Клиент: Запишите мой номер восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь\n"
    "[00:20] Менеджер: Записал, карта 4276 3800 1234 5678 для оплаты\n"
)


def _analysis() -> CallAnalysis:
    rubric = [
        RubricResult(
            item_id="greeting",
            title="Приветствие",
            weight=1,
            verdict="done",
            evidence="Иван, здравствуйте",
            verified=True,
            at=4,
        ),
        RubricResult(item_id="objections", title="Работа с возражениями", weight=2, verdict="missed"),
        RubricResult(item_id="closing", title="Завершение", weight=1, verdict="partly"),
        RubricResult(item_id="extra", title="Допродажа", weight=1, verdict="not_assessed"),
    ]
    return CallAnalysis(summary="s", rubric=rubric, score=rubric_score(rubric))


def _seed(tmp_path: Path) -> tuple[Store, list[int]]:
    store = Store.open(f"sqlite:///{tmp_path}/salesbot.db", DEC_1)
    return store, _seed_into(store)


def _seed_into(store: Store) -> list[int]:
    """Three analysed calls (Dec 1, Dec 3, Dec 3 without transcript) and four corrections."""
    ids = []
    for n, (at, transcript) in enumerate([(DEC_1, TRANSCRIPT), (DEC_3, TRANSCRIPT), (DEC_3, None)]):
        call = Call.create(
            event_id=f"e{n}", direction="out" if n == 1 else "in", entity_type="leads", entity_id=n, note_id=n,
            event_created_at=at, first_seen_at=at, updated_at=at, manager_name="Иван Петров", transcript=transcript,
        )  # fmt: skip
        store.update(call, at, analysis_json=_analysis().model_dump_json())
        ids.append(call.id)
    first, second, gone = (Call.get_by_id(i) for i in ids)
    store.correct_verdict(first, "objections", 1, "partly", "Анна", 7, DEC_1 + 60)  # before --since
    store.correct_verdict(second, "objections", 1, "done", "Анна", 7, DEC_3 + 60)
    store.correct_verdict(second, "greeting", 0, "done", "Олег", 8, DEC_3 + 70)  # the model's verdict, confirmed
    store.correct_verdict(gone, "closing", 2, "done", "Анна", 7, DEC_3 + 80)
    return ids


def test_corrected_calls_become_an_eval_set_that_eval_reads(tmp_path: Path) -> None:
    store, (_, second, _) = _seed(tmp_path)
    store.close()
    config = write_config(tmp_path, "")
    out = tmp_path / "mine"
    done = run_cli("eval", "--corrections", str(out), "--since", "2026-12-02", config=config)
    assert done.returncode == 0, done.stderr
    assert "1 corrected call(s) written" in done.stdout and "1 skipped: transcript already removed" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        f"call-{second}.expected.toml", f"call-{second}.txt", "rubric.toml"
    ]  # fmt: skip
    expected = tomllib.loads((out / f"call-{second}.expected.toml").read_text(encoding="utf-8"))
    assert expected["verdicts"] == {"greeting": "done", "objections": "done", "closing": "partly"}
    assert expected["score"]["expected"] == 88  # (1 + 2 + 0.5) / 4, half up: the human verdicts count
    assert expected["call"]["direction"] == "out"
    text = (out / f"call-{second}.txt").read_text(encoding="utf-8")
    assert "сто двадцать три" not in text and "4276" not in text and "Иван, здравствуйте" in text
    (case,) = load_cases(out)
    assert case.verdicts["objections"] == "done" and case.score == 88
    header = (out / f"call-{second}.expected.toml").read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("# call") and "Анна, Олег" in header and "1 changed" in header


def test_an_unredacting_config_is_refused_without_yes(tmp_path: Path) -> None:
    _seed(tmp_path)[0].close()
    config = write_config(tmp_path, "[analysis]\nredact = []\n")
    out = tmp_path / "mine"
    refused = run_cli("eval", "--corrections", str(out), "--since", "2026-12-02", config=config)
    assert refused.returncode == 2 and "analysis.redact" in refused.stderr and not out.exists()
    agreed = run_cli("eval", "--corrections", str(out), "--since", "2026-12-02", "--yes", config=config)
    assert agreed.returncode == 0, agreed.stderr
    assert "сто двадцать три" in next(out.glob("*.txt")).read_text(encoding="utf-8")


def test_a_bad_day_and_a_missing_since_name_the_option(tmp_path: Path) -> None:
    config = write_config(tmp_path, "")
    bad = run_cli("eval", "--corrections", str(tmp_path / "x"), "--since", "1 dec", config=config)
    assert bad.returncode == 2 and "--since" in bad.stderr
    missing = run_cli("eval", "--corrections", str(tmp_path / "x"), config=config)
    assert missing.returncode == 2 and "--since" in missing.stderr


def test_the_agreement_line_counts_checks_and_names_the_most_overruled_item() -> None:
    checks = [Check("Приветствие", "done", "done")] * 41 + [Check("Работа с возражениями", "missed", "done")] * 5
    checks += [Check("Завершение", "partly", "done")] * 2
    assert agreement_line(checks) == (
        "🧑‍⚖️ Модель согласна с вашими исправлениями: 41 из 48 (85 %); чаще всего ошибается: Работа с возражениями (5)"
    )
    assert agreement_line([Check("A", "done", "done")]) == "🧑‍⚖️ Модель согласна с вашими исправлениями: 1 из 1 (100 %)"
    assert agreement_line([]) == ""


def test_the_weekly_report_says_how_often_the_model_agreed_that_week(tmp_path: Path) -> None:
    app = build_rig(tmp_path).app
    _seed_into(app.store)
    line = "🧑‍⚖️ Модель согласна с вашими исправлениями: 1 из 4 (25 %); чаще всего ошибается: Работа с возражениями (2)"
    assert corrections_block.week_line(app.store, DEC_1 - 86400, DEC_3 + 86400) == line
    assert corrections_block.week_line(app.store, DEC_3, DEC_3 + 86400).startswith(
        "🧑‍⚖️ Модель согласна с вашими исправлениями: 1 из 3"
    )
    week = weekly.plan_week(app, date(2026, 11, 30), DEC_3 + 86400 * 5, "weekly:test")[0].payload["parts"]
    assert line in "\n".join(week)
    before = weekly.plan_week(app, date(2026, 11, 23), DEC_3 + 86400 * 5, "weekly:before")[0].payload["parts"]
    assert "Модель согласна" not in "\n".join(before)
