"""Analysis through the real `openai` client against the fake OpenAI server: the rubric in
the schema and the prompt, the score computed in code, a careless answer kept (an item left
out is not assessed, a bad date dropped), one re-ask only for an answer with nothing usable,
and one paid analysis per call even across a restart."""

from __future__ import annotations

import json
from typing import Any

from salesbot_poller.app import build_openai
from salesbot_poller.config import DEFAULT_RUBRIC, RubricItem
from salesbot_poller.domain import CallContext, ModelUsage, RubricResult
from salesbot_poller.lanes import run_once
from salesbot_poller.services.analysis import OpenAIAnalyzer
from salesbot_poller.services.prompts import DATA_RULE, REASK, load_prompt
from salesbot_poller.services.rubric import total_score
from salesbot_poller.store import Usage
from tests.conftest import CHAT_ID, Servers
from tests.fakes.openai_api import default_analysis
from tests.loopback_app import add_call, at, calls, loopback_rig

CONTEXT = CallContext(
    "in", "Иван", "leads", "ООО Ромашка", "https://acme.amocrm.ru/leads/detail/1", "+7", 125, 1795600800
)


def analyzer(servers: Servers, **kwargs: Any) -> OpenAIAnalyzer:
    config = loopback_rig(servers).app.config
    return OpenAIAnalyzer(build_openai(config), "gpt-4o-mini", **kwargs)


def schema_ids(request: dict[str, Any]) -> list[str]:
    schema = request["response_format"]["json_schema"]
    assert schema["strict"] is True
    text = json.dumps(schema["schema"])
    return [item.id for item in DEFAULT_RUBRIC if f'"{item.id}"' in text]


def test_default_rubric_is_in_the_schema_and_the_prompt_and_the_score_is_computed(servers: Servers) -> None:
    result = analyzer(servers).analyse("Менеджер: Добрый день!", CONTEXT)
    (request,) = servers.openai.chat_requests
    assert schema_ids(request) == [item.id for item in DEFAULT_RUBRIC]
    assert "score" not in json.dumps(request["response_format"]["json_schema"]["schema"]["properties"])
    system = request["messages"][0]["content"]
    for title in (
        "Приветствие и представление",
        "Выявление потребностей",
        "Презентация предложения",
        "Работа с возражениями",
        "Договорённость о следующем шаге",
        "Завершение",
    ):
        assert title in system
    assert "2026-11-25 (среда)" in request["messages"][1]["content"], "the date lets the model name due dates"
    # The fake answers done, done, partly, missed, n/a, n/a: (1 + 1 + 0.5 + 0) / 4 = 62.5 -> 63.
    assert [r.verdict for r in result.rubric][:4] == ["done", "done", "partly", "missed"]
    assert result.score == 63 and result.rubric[0].title == "Приветствие и представление"
    assert result.next_step is not None and result.next_step.due_date == "2026-11-27"
    assert result.objections[0].handling == "Предложил скидку за объём" and result.sentiment == "positive"


def test_score_weights_partly_half_and_not_applicable_left_out() -> None:
    def item(verdict: str, weight: float) -> RubricResult:
        return RubricResult(item_id="x", title="x", weight=weight, verdict=verdict)  # type: ignore[arg-type]

    assert total_score([item("done", 3), item("missed", 1)]) == 75
    assert total_score([item("partly", 1), item("done", 1), item("not_applicable", 5)]) == 75
    assert total_score([item("missed", 1)]) == 0
    assert total_score([item("not_applicable", 1)]) is None


def answers(*bodies: dict[str, Any]) -> Any:
    """An analysis_fn giving `bodies` in turn."""
    queue = list(bodies)
    return lambda request: queue.pop(0)


def good_answer() -> dict[str, Any]:
    schema = {"properties": {"summary": {}, "rubric": {"properties": {item.id: {} for item in DEFAULT_RUBRIC}}}}
    return default_analysis({"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}})


def test_the_schema_requires_one_verdict_per_item_as_an_object_keyed_by_id(servers: Servers) -> None:
    analyzer(servers).analyse("Менеджер: Добрый день!", CONTEXT)
    schema = servers.openai.chat_requests[0]["response_format"]["json_schema"]["schema"]
    rubric = schema["properties"]["rubric"]
    if "$ref" in rubric:
        rubric = schema["$defs"][rubric["$ref"].rsplit("/", 1)[1]]
    ids = [item.id for item in DEFAULT_RUBRIC]
    assert rubric["type"] == "object" and list(rubric["properties"]) == ids
    assert sorted(rubric["required"]) == sorted(ids) and rubric["additionalProperties"] is False


def test_an_item_left_out_is_not_assessed_without_a_re_ask(servers: Servers) -> None:
    good = good_answer()
    missing = dict(good, rubric={k: v for k, v in good["rubric"].items() if k != "objections"})
    servers.openai.analysis_fn = answers(missing)
    result = analyzer(servers).analyse("text", CONTEXT)
    assert len(servers.openai.chat_requests) == 1, "nothing worth paying a re-ask for"
    by_id = {r.item_id: r.verdict for r in result.rubric}
    assert by_id["objections"] == "not_assessed" and by_id["greeting"] == "done"
    # done, done, partly; objections (the fake's "missed") not assessed; the rest n/a: 2.5 / 3 -> 83.
    assert result.score == 83
    assert result.problems == ["rubric.objections: left out of the answer: not assessed"]


def test_a_bad_date_and_an_unknown_sentiment_are_dropped_and_the_rest_kept(servers: Servers) -> None:
    bad = good_answer() | {"next_step": {"action": "Позвонить", "due_date": "в понедельник"}, "sentiment": "bored"}
    servers.openai.analysis_fn = answers(bad)
    result = analyzer(servers).analyse("text", CONTEXT)
    assert len(servers.openai.chat_requests) == 1
    assert result.next_step is not None and (result.next_step.action, result.next_step.due_date) == ("Позвонить", None)
    assert result.sentiment == "neutral" and result.score == 63 and result.summary.startswith("Итог")
    assert result.problems == [
        "next_step.due_date 'в понедельник' is not a date (YYYY-MM-DD): dropped",
        "sentiment 'bored' is not one of positive, neutral, negative: neutral",
    ]


def test_an_answer_with_nothing_usable_is_re_asked_once_then_sent_without_a_summary(servers: Servers) -> None:
    empty = {"summary": "", "rubric": {}}
    servers.openai.analysis_fn = answers(empty, good_answer())
    result = analyzer(servers).analyse("text", CONTEXT)
    assert len(servers.openai.chat_requests) == 2 and result.score == 63 and not result.summary_missing
    (in1, out1), (in2, out2) = servers.openai.chat_usage
    assert result.usage == ModelUsage(model="gpt-4o-mini", input_tokens=in1 + in2, output_tokens=out1 + out2)
    reask = servers.openai.chat_requests[1]["messages"]
    assert reask[-2]["role"] == "assistant" and json.loads(reask[-2]["content"]) == empty
    assert reask[-1]["content"] == REASK.format(error="rubric.greeting: left out of the answer: not assessed")

    servers.openai.analysis_fn = answers("Извините, не могу.", "{}")
    result = analyzer(servers).analyse("text", CONTEXT)
    assert len(servers.openai.chat_requests) == 4, "one re-ask, no more"
    assert result.summary_missing and result.score is None
    assert {r.verdict for r in result.rubric} == {"not_assessed"}


def test_a_configured_rubric_and_prompt_file_replace_the_defaults(servers: Servers) -> None:
    prompt = servers.tmp / "prompt.txt"
    prompt.write_text('Оцени звонок по пунктам:\n{rubric}\nПример: {"a": 1}', encoding="utf-8")
    items = (
        RubricItem(id="price", title="Назвал цену", done_when="цена прозвучала", weight=3),
        RubricItem(id="upsell", title="Допродажа", weight=1),
    )
    app = loopback_rig(servers, analysis={"prompt_file": str(prompt), "rubric": [i.model_dump() for i in items]}).app
    assert app.config.analysis.rubric == items
    result = analyzer(servers, rubric=items, prompt_template=load_prompt(app.config.analysis.prompt_file)).analyse(
        "text", CONTEXT
    )
    system = servers.openai.chat_requests[0]["messages"][0]["content"]
    expected = "Оцени звонок по пунктам:\n- price: Назвал цену — выполнено, если цена прозвучала\n- upsell: Допродажа\n"
    assert system == expected + 'Пример: {"a": 1}\n\n' + DATA_RULE, "a prompt of one's own still learns the data rule"
    assert [r.item_id for r in result.rubric] == ["price", "upsell"] and result.score == 100  # done x3 + done


def test_a_call_is_analysed_once_even_when_delivery_fails_and_the_process_restarts(servers: Servers) -> None:
    servers.telegram.down_chats = {CHAT_ID}
    rig = loopback_rig(servers)
    rig.app.analyzer = OpenAIAnalyzer(build_openai(rig.app.config), "gpt-4o-mini")
    add_call(rig, 1)
    run_once(rig.app, at(0))
    assert calls()[0].stage == "notifying" and json.loads(calls()[0].analysis_json or "{}")["score"] == 63
    servers.telegram.down_chats = set()
    rig.app.store.close()
    restarted = loopback_rig(servers).app
    restarted.analyzer = OpenAIAnalyzer(build_openai(restarted.config), "gpt-4o-mini")
    run_once(restarted, at(10))
    assert calls()[0].stage == "notified" and len(servers.openai.chat_requests) == 1, "paid once"
    ((tokens_in, tokens_out),) = servers.openai.chat_usage
    analyses = Usage.select().where(Usage.kind == "analysis")
    rows = [(u.kind, u.call_id, u.input_tokens, u.output_tokens) for u in analyses]
    assert rows == [("analysis", calls()[0].id, tokens_in, tokens_out)], "its tokens counted once, with it"
