"""The buttons' callback data: signed with the install's key, read back only when the MAC is
this install's, and within Telegram's 64 bytes for every button of any call; the key and the
presses in the store (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from salesbot_poller.domain import CallAnalysis, CallEvent, RubricResult
from salesbot_poller.pipeline import buttons
from salesbot_poller.pipeline.buttons import DATA_LIMIT, MAX_ITEMS, MAX_QUOTES, Tap
from salesbot_poller.store import BiCall, BiRubricItem, Store

KEY = bytes(range(32))
BIGGEST = 2**63 - 1  # the widest id the store holds


def analysis(items: int) -> CallAnalysis:
    rubric = [
        RubricResult(item_id=f"item{n}", title="Очень длинное название пункта скрипта " * 3, weight=1,
                     verdict="done", evidence="цитата", verified=True, at=10 * 3600 + n)
        for n in range(items)
    ]  # fmt: skip
    return CallAnalysis(summary="", rubric=rubric, score=100)


def every_button(call_id: int, items: int) -> list[str]:
    view = analysis(items)
    rows = buttons.card_keyboard(view, call_id, KEY, 14) + buttons.correction_keyboard(view, call_id, KEY)
    return [data for row in rows for _, data in row]


@pytest.mark.parametrize("call_id", [1, 2**31, BIGGEST])
def test_every_button_fits_telegrams_64_bytes(call_id: int) -> None:
    datas = every_button(call_id, MAX_ITEMS + 5)
    assert len(datas) == MAX_QUOTES + 1 + 3 * MAX_ITEMS + 1
    assert max(len(data.encode()) for data in datas) <= DATA_LIMIT
    assert all(buttons.read(data, KEY) is not None for data in datas)


def test_a_button_reads_back_as_what_it_asks() -> None:
    assert buttons.read(buttons.data(KEY, "s", BIGGEST, "31m"), KEY) == Tap("set", BIGGEST, 31, "missed")
    assert buttons.read(buttons.data(KEY, "c", 7, "2"), KEY) == Tap("clip", 7, 2)
    assert buttons.read(buttons.data(KEY, "e", 7), KEY) == Tap("edit", 7)
    assert buttons.read(buttons.data(KEY, "b", 7), KEY) == Tap("back", 7)


@pytest.mark.parametrize(
    "data",
    [
        buttons.data(b"another install", "e", 7),  # another install's key
        buttons.data(KEY, "e", 7)[:-1] + "A",  # a MAC changed
        buttons.data(KEY, "e", 7).replace(":7:", ":8:"),  # another call under the same MAC
        buttons.data(KEY, "x", 7),  # an action we do not have, signed
        buttons.data(KEY, "s", 7, "1z"),  # a verdict we do not have, signed
        buttons.data(KEY, "e", 7) + "x" * 64,  # too long
        "",
        ":::",
        "e:7:0",
        "е:7:0:кириллица",
    ],
)
def test_a_forged_or_broken_button_is_not_ours(data: str) -> None:
    assert buttons.read(data, KEY) is None


def test_quote_buttons_only_with_clip_days() -> None:
    view = analysis(2)
    assert [text for row in buttons.card_keyboard(view, 1, KEY, 0) for text, _ in row] == ["✏️ Исправить"]


def test_the_buttons_go_on_the_last_part_showing_the_rubric() -> None:
    assert buttons.keyboard_part(["head", "<b>Скрипт</b>\n…", "<b>Скрипт</b> (продолжение)\n…", "Риски"]) == 2
    assert buttons.keyboard_part(["head", "tail"]) == 1


@pytest.mark.postgres
def test_the_key_is_made_once_and_a_press_is_taken_once(database_url: str) -> None:
    store = Store.open(database_url, 1)
    try:
        key = store.callback_secret()
        assert len(key) == 32 and store.callback_secret() == key
        assert store.take_callback("q1", 100) is True
        assert store.take_callback("q1", 101) is False, "met again (a restart): not taken twice"
        assert store.take_callback("q2", 100 + 8 * 24 * 3600) is True
        assert store.take_callback("q1", 100 + 8 * 24 * 3600) is True, "old presses are forgotten"
    finally:
        store.close()
    again = Store.open(database_url, 2)
    try:
        assert again.callback_secret() == key, "the key outlives the process"
    finally:
        again.close()


@pytest.mark.postgres
def test_a_correction_is_stored_beside_the_models_verdict(database_url: str) -> None:
    store = Store.open(database_url, 1)
    try:
        store.record_window([CallEvent("ev1", "in", "leads", 1, 2, 10)], [], 0, 20)
        call = store.call_by_event("ev1")
        assert call is not None
        view = analysis(2).model_copy(update={"score": 100})
        store.update(call, 30, analysis_json=view.model_dump_json())
        assert store.correct_verdict(call, "item1", 1, "missed", "Анна", 42, 40) is True
        assert store.correct_verdict(call, "item1", 1, "missed", "Анна", 42, 41) is False, "a double tap"
        item = BiRubricItem.get(BiRubricItem.item_id == "item1")
        assert (item.verdict, item.human_verdict, item.corrected_by, item.corrected_at) == (
            "done",
            "missed",
            "Анна",
            40,
        )
        assert (BiCall.get().score, BiCall.get().score_corrected) == (100, 50)
        assert [fix.verdict for fix in store.corrected_between(0, 100)] == ["missed"]
        assert store.correct_verdict(call, "item1", 1, "done", "Олег", 43, 50) is True
        assert store.corrections(call.id)["item1"].corrected_by == "Олег"
        assert BiCall.get().score_corrected == 100
    finally:
        store.close()
