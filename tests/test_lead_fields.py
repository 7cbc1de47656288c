"""Scores in amoCRM lead fields: the last call's score, its date and a low-score tag
written on the lead through the real amoCRM client against the fake amoCRM — batched, the
newest call winning, the lead's other tags kept, exactly once across a crash — and `check`
naming a field that is missing or of the wrong type."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from salesbot_poller.cli.check import _check_lead_fields
from salesbot_poller.config import parse_config
from salesbot_poller.domain import CallAnalysis, CallContext, CallEvent, CallNote
from salesbot_poller.errors import ConfigError, PermanentError, TransientError
from salesbot_poller.lanes import run_once
from salesbot_poller.pipeline import lead_fields
from salesbot_poller.store import Delivery
from tests.builder import Rig, offline_config
from tests.conftest import Servers
from tests.loopback_app import IVAN, at, loopback_rig, ts
from tests.memory import MemoryAnalyzer

SCORE, LAST_CALL, TEXT = 901, 902, 903
FIELDS = {"score_field_id": SCORE, "last_call_field_id": LAST_CALL, "tag_low_score": "звонок<50", "tag_below_score": 50}


class Crash(BaseException):
    """The process dying right here (not an error anything may catch)."""


def account(servers: Servers, *leads: int) -> None:
    amo = servers.amo
    amo.add_custom_field("leads", SCORE, "Оценка звонка", "numeric")
    amo.add_custom_field("leads", LAST_CALL, "Последний звонок", "date")
    amo.add_custom_field("leads", TEXT, "Комментарий", "text")
    for lead in leads:
        amo.add_entity("lead", lead, f"Сделка {lead}", _embedded={"tags": [{"id": 11, "name": "VIP", "color": None}]})


def rig_with(servers: Servers, **amocrm: Any) -> Rig:
    return loopback_rig(servers, paced=False, amocrm=FIELDS | amocrm)


def add(rig: Rig, n: int, lead: int, minutes: float, entity: str = "leads") -> None:
    event = CallEvent(f"01EVENT{n:019d}", "in", entity, lead, 100 + n, ts(minutes))
    note = CallNote(100 + n, 125, "+79991234567", f"https://rec.example/{n}.mp3", 4, "MangoOfficeWidget", IVAN, None)
    rig.source.add(event, note, name=f"Сделка {lead}")


def patches(servers: Servers) -> int:
    return servers.amo.count("/api/v4/leads$", method="PATCH")


def test_score_date_and_tag_reach_the_lead_once_and_its_other_tags_stay(servers: Servers) -> None:
    account(servers, 7001)
    rig = rig_with(servers)
    rig.analyzer.score = 42
    add(rig, 1, 7001, minutes=-10)
    run_once(rig.app, at(0))
    run_once(rig.app, at(10))
    amo = servers.amo
    assert patches(servers) == 1 and len(amo.lead_patches) == 1
    assert amo.lead_field(7001, SCORE) == 42 and amo.lead_field(7001, LAST_CALL) == ts(-10)
    assert amo.lead_tags(7001) == ["VIP", "звонок<50"], "the tag is added, the lead's own tags stay"
    (body,) = amo.lead_patches[0]
    assert "_embedded" not in body and body["tags_to_add"] == [{"name": "звонок<50"}]
    (row,) = Delivery.select().where(Delivery.kind == "amo_fields")
    assert row.done_at is not None and row.error is None and row.sent_ids_json == "[7001]"


def test_no_tag_at_or_above_the_threshold_and_nothing_unless_asked(servers: Servers) -> None:
    account(servers, 7001, 7002)
    rig = rig_with(servers, tag_below_score=50)
    rig.analyzer.score = 50
    add(rig, 1, 7001, minutes=-10)
    run_once(rig.app, at(0))
    assert servers.amo.lead_field(7001, SCORE) == 50 and servers.amo.lead_tags(7001) == ["VIP"]
    plain = loopback_rig(servers, paced=False)
    add(plain, 2, 7002, minutes=-5)
    run_once(plain.app, at(5))
    assert patches(servers) == 1, "no lead fields are written unless a key asks for them"


def test_one_patch_carries_every_lead_and_calls_on_contacts_write_none(servers: Servers) -> None:
    account(servers, 7001, 7002, 7003)
    rig = rig_with(servers)
    for n, lead in enumerate((7001, 7002, 7003), 1):
        add(rig, n, lead, minutes=-30 + n)
    add(rig, 4, 8004, minutes=-20, entity="contacts")
    run_once(rig.app, at(0))
    assert patches(servers) == 1
    assert sorted(body["id"] for body in servers.amo.lead_patches[0]) == [7001, 7002, 7003]
    assert Delivery.select().where(Delivery.kind == "amo_fields").count() == 3


def test_of_two_calls_of_a_lead_in_one_batch_only_the_newest_is_written(servers: Servers) -> None:
    account(servers, 7001)
    rig = rig_with(servers)
    add(rig, 1, 7001, minutes=-5)  # the newer call, recorded first
    add(rig, 2, 7001, minutes=-30)
    run_once(rig.app, at(0))
    ((body,),) = servers.amo.lead_patches
    assert body["custom_fields_values"][1]["values"] == [{"value": ts(-5)}]
    older = Delivery.get(Delivery.key.endswith(":amo_fields"), Delivery.sent_ids_json == "[]")
    assert older.done_at is not None and older.error is None, "superseded: closed, never sent"


@dataclass
class ScoresByCall(MemoryAnalyzer):
    """A score per call (by its start time); the calls in `fail_once` fail their first try."""

    scores: dict[int, int] = field(default_factory=dict)
    fail_once: set[int] = field(default_factory=set)

    def analyse(self, transcript: str, context: CallContext) -> CallAnalysis:
        if context.started_at in self.fail_once:  # workers run in threads: decided per call
            self.fail_once.discard(context.started_at)
            raise TransientError("chat model busy")
        analysis = super().analyse(transcript, context)
        return analysis.model_copy(update={"score": self.scores[context.started_at]})


def test_a_late_analysed_older_call_does_not_overwrite_a_newer_ones_score(servers: Servers) -> None:
    account(servers, 7001)
    rig = rig_with(servers)
    analyzer = ScoresByCall(scores={ts(-30): 20, ts(-5): 80}, fail_once={ts(-30)})
    rig.app.analyzer = analyzer
    add(rig, 1, 7001, minutes=-30)  # the older call: its analysis fails the first time
    add(rig, 2, 7001, minutes=-5)
    run_once(rig.app, at(0))
    assert servers.amo.lead_field(7001, SCORE) == 80 and patches(servers) == 1
    run_once(rig.app, at(60))  # the older call is analysed now, with a low score
    assert len(analyzer.calls) == 2 and not analyzer.fail_once, "the older call was analysed this time"
    assert Delivery.select().where(Delivery.kind == "amo_fields").count() == 2
    assert patches(servers) == 1 and servers.amo.lead_field(7001, SCORE) == 80
    assert servers.amo.lead_field(7001, LAST_CALL) == ts(-5) and servers.amo.lead_tags(7001) == ["VIP"]


def crash_once(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, when: Any) -> None:
    """Make `module.name` die (`Crash`) the first time `when(*args)` holds."""
    original = getattr(module, name)
    crashed: list[bool] = []

    def dying(*args: Any, **kwargs: Any) -> Any:
        if not crashed and when(*args, **kwargs):
            crashed.append(True)
            raise Crash
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, dying)


def test_a_crash_after_amocrm_accepted_the_patch_does_not_send_it_again(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    account(servers, 7001)
    rig = rig_with(servers)
    rig.analyzer.score = 30
    add(rig, 1, 7001, minutes=-10)
    # amoCRM has applied the PATCH; the process dies before the row is marked done.
    crash_once(monkeypatch, lead_fields, "_close", lambda app, rows, now, sent, note: note == "written to the lead")
    with pytest.raises(Crash):
        run_once(rig.app, at(0))
    assert patches(servers) == 1
    rig.app.store.close()
    restarted = rig_with(servers)  # a new process on the same database
    run_once(restarted.app, at(5))
    run_once(restarted.app, at(10))
    assert patches(servers) == 1, "the lead already shows it: not sent a second time"
    assert servers.amo.count("/api/v4/leads$", method="GET") == 1, "one look at the lead, then nothing"
    assert servers.amo.lead_field(7001, SCORE) == 30 and servers.amo.lead_tags(7001) == ["VIP", "звонок<50"]
    (row,) = Delivery.select().where(Delivery.kind == "amo_fields")
    assert row.done_at is not None and row.sent_ids_json == "[7001]"


def test_a_crash_before_the_patch_left_sends_it_once_after_the_restart(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    account(servers, 7001)
    rig = rig_with(servers)
    add(rig, 1, 7001, minutes=-10)
    assert rig.app.crm is not None
    crash_once(monkeypatch, type(rig.app.crm), "patch", lambda client, path, payload: True)
    with pytest.raises(Crash):
        run_once(rig.app, at(0))
    assert patches(servers) == 0
    rig.app.store.close()
    restarted = rig_with(servers)
    run_once(restarted.app, at(5))
    run_once(restarted.app, at(10))
    assert patches(servers) == 1 and servers.amo.lead_field(7001, SCORE) == 50


def test_a_lead_amocrm_refuses_is_given_up_and_the_others_are_written(servers: Servers) -> None:
    account(servers, 7001, 7003)  # lead 7002 was deleted
    rig = rig_with(servers)
    for n, lead in enumerate((7001, 7002, 7003), 1):
        add(rig, n, lead, minutes=-30 + n)
    run_once(rig.app, at(0))
    run_once(rig.app, at(10))
    assert servers.amo.lead_field(7001, SCORE) == 50 and servers.amo.lead_field(7003, SCORE) == 50
    refused = Delivery.get(Delivery.kind == "amo_fields", Delivery.error.is_null(False))
    assert refused.done_at is not None and "400" in (refused.error or "") and refused.sent_ids_json == "[]"
    assert patches(servers) == 4, "the batch, then each lead alone: never again after that"


def test_a_transient_failure_puts_the_fields_off_and_they_go_later(servers: Servers) -> None:
    account(servers, 7001)
    rig = rig_with(servers)
    servers.amo.fail_next("/api/v4/leads$", 502, "<html>Bad Gateway</html>", method="PATCH")
    add(rig, 1, 7001, minutes=-10)
    run_once(rig.app, at(0))
    assert servers.amo.lead_field(7001, SCORE) is None
    (row,) = Delivery.select().where(Delivery.kind == "amo_fields")
    assert row.done_at is None and row.attempts == 1 and "502" in (row.error or "")
    run_once(rig.app, at(30))
    assert servers.amo.lead_field(7001, SCORE) == 50
    assert servers.amo.count("/api/v4/leads$", method="GET") == 1, "a 502 may have landed: looked first"
    assert patches(servers) == 2


def test_check_names_a_missing_or_mistyped_lead_field(servers: Servers) -> None:
    account(servers)
    good = rig_with(servers)
    clock = lambda: at(0)  # noqa: E731
    assert _check_lead_fields(good.app.config, good.app.store, clock).startswith("ok (score field 901, last call")
    good.app.store.close()
    wrong = rig_with(servers, score_field_id=TEXT, last_call_field_id=999)
    with pytest.raises(PermanentError) as refused:
        _check_lead_fields(wrong.app.config, wrong.app.store, clock)
    assert str(refused.value) == (
        "amocrm.score_field_id: lead field 903 «Комментарий» is of type text, it must be numeric; "
        "amocrm.last_call_field_id: the account has no lead field 999"
    )


def test_a_date_field_may_come_back_as_its_days_midnight() -> None:
    wanted = {"custom_fields_values": [{"field_id": LAST_CALL, "values": [{"value": ts(-10)}]}]}
    midnight = int(datetime(2026, 11, 25).timestamp())
    lead = {"custom_fields_values": [{"field_id": LAST_CALL, "values": [{"value": midnight}]}]}
    assert lead_fields._shows(lead, wanted, LAST_CALL)
    assert not lead_fields._shows(lead | {"custom_fields_values": []}, wanted, LAST_CALL)


def test_a_bad_key_is_one_line_naming_it(tmp_path: Path) -> None:
    raw = offline_config(tmp_path)
    raw["amocrm"] |= {"score_field_id": -1, "tag_below_score": 101, "last_call_field_id": "дата"}
    with pytest.raises(ConfigError) as bad:
        parse_config(raw, {})
    assert sorted(problem.split(":")[0] for problem in bad.value.problems) == [
        "amocrm.last_call_field_id",
        "amocrm.score_field_id",
        "amocrm.tag_below_score",
    ]
