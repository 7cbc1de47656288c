"""Cost from the first day: OpenAI's list prices are built in (pipeline/prices.py), the
config's prices replace them (0: free), and a model with neither has no price, which
`status`, `usage` and `check` say instead of showing $0.00. The daily budget counts the
built-in prices."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from salesbot_poller.config import OpenAIConfig
from salesbot_poller.errors import BudgetReached
from salesbot_poller.pipeline import usage
from salesbot_poller.pipeline.prices import free_on_openai_warning
from salesbot_poller.store import Store
from tests.conftest import Servers, run_cli

NOW = int(datetime(2026, 12, 5, 12, 0, tzinfo=UTC).timestamp())
LOCAL_STT, LOCAL_CHAT = "Systran/faster-whisper-small", "qwen2.5-7b-instruct"


@pytest.fixture
def store(tmp_path: Path) -> Any:
    opened = Store.open(f"sqlite:///{tmp_path}/db.sqlite", NOW)
    yield opened
    opened.close()


def spend(store: Store, stt: str = "whisper-1", chat: str = "gpt-4o-mini", at: int = NOW - 60) -> None:
    """Ten minutes of speech-to-text and an analysis of 1 M tokens in and 1 M out."""
    store.add_usage(call_id=1, at=at, kind="transcription", model=stt, audio_seconds=600)
    store.add_usage(call_id=1, at=at, kind="analysis", model=chat, input_tokens=1_000_000, output_tokens=1_000_000)


def today_line(store: Store, prices: OpenAIConfig) -> str:
    (line,) = [line for line in usage.status_lines(store, prices, NOW) if line.lstrip().startswith("today")]
    return line


def test_openai_models_are_priced_from_the_first_day_without_any_price_set(store: Store) -> None:
    spend(store)
    # 10 min x $0.006 + 1 M x $0.15 + 1 M x $0.60 (whisper-1 and gpt-4o-mini list prices)
    assert today_line(store, OpenAIConfig()).endswith(", $0.81 (2 requests)")


@pytest.mark.parametrize(
    ("stt", "per_minute"), [("whisper-1", 0.006), ("gpt-4o-transcribe", 0.006), ("gpt-4o-mini-transcribe", 0.003)]
)
def test_each_built_in_speech_price(store: Store, stt: str, per_minute: float) -> None:
    store.add_usage(call_id=1, at=NOW - 60, kind="transcription", model=stt, audio_seconds=6000)
    assert usage.cost_between(store, OpenAIConfig(), usage.day_start(NOW)).usd == pytest.approx(100 * per_minute)


@pytest.mark.parametrize(
    ("chat", "per_million"),
    [
        ("gpt-4o-mini", (0.15, 0.60)),
        ("gpt-4o", (2.50, 10.00)),
        ("gpt-4.1", (2.00, 8.00)),
        ("gpt-4.1-mini", (0.40, 1.60)),
        ("gpt-4.1-nano", (0.10, 0.40)),
        ("gpt-4o-mini-2024-07-18", (0.15, 0.60)),  # a dated snapshot is its model
    ],
)
def test_each_built_in_chat_price(store: Store, chat: str, per_million: tuple[float, float]) -> None:
    tokens = {"input_tokens": 2_000_000, "output_tokens": 1_000_000}
    store.add_usage(call_id=1, at=NOW - 60, kind="analysis", model=chat, **tokens)
    expected = 2 * per_million[0] + per_million[1]
    assert usage.cost_between(store, OpenAIConfig(), usage.day_start(NOW)).usd == pytest.approx(expected)


def test_the_configured_prices_replace_the_built_in_ones_and_0_is_free(store: Store) -> None:
    spend(store)
    mine = OpenAIConfig(
        audio_price_per_minute_usd=0.01, input_token_price_per_million_usd=1.0, output_token_price_per_million_usd=2.0
    )
    assert today_line(store, mine).endswith(", $3.10 (2 requests)")
    free = OpenAIConfig(
        audio_price_per_minute_usd=0, input_token_price_per_million_usd=0, output_token_price_per_million_usd=0
    )
    assert today_line(store, free).endswith(", $0.00 (2 requests)")


def test_a_model_without_a_price_is_named_not_counted_as_free(store: Store) -> None:
    spend(store, stt=LOCAL_STT, chat=LOCAL_CHAT)
    line = today_line(store, OpenAIConfig())
    assert line.endswith(f", price not set for {LOCAL_STT}, {LOCAL_CHAT} (2 requests)"), line
    assert "$" not in line
    spend(store, at=NOW - 30)  # and an OpenAI day besides: what is priced, and what is not
    assert f"$0.81 + price not set for {LOCAL_STT}, {LOCAL_CHAT}" in today_line(store, OpenAIConfig())


def test_usage_says_price_not_set_for_a_local_model(servers: Servers) -> None:
    path = servers.write_config()
    path.write_text(path.read_text().replace("[openai]\n", f'[openai]\nanalysis_model = "{LOCAL_CHAT}"\n'))
    opened = Store.open(servers.database, NOW)
    spend(opened, chat=LOCAL_CHAT)
    opened.close()
    table = run_cli("usage", "--month", "2026-12", config=path)
    assert table.returncode == 0, table.stderr
    assert f"0.06 + price not set for {LOCAL_CHAT}" in table.stdout.splitlines()[1], table.stdout
    sheet = run_cli("usage", "--month", "2026-12", "--csv", config=path)
    assert f"$0.0600 + price not set for {LOCAL_CHAT}" in sheet.stdout


def test_check_warns_once_of_every_model_without_a_price(servers: Servers) -> None:
    path = servers.write_config()
    models = f'[openai]\ntranscription_model = "{LOCAL_STT}"\nanalysis_model = "{LOCAL_CHAT}"\n'
    path.write_text(path.read_text().replace("[openai]\n", models))
    servers.openai.models = (LOCAL_STT, LOCAL_CHAT)
    result = run_cli("check", config=path)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stdout.splitlines() if "price not set" in line]
    assert warnings == [
        f"config: warning: price not set for {LOCAL_STT} (openai.transcription_model), {LOCAL_CHAT} "
        "(openai.analysis_model): not in the built-in OpenAI price list (as of 2026-12-05), so its cost shows "
        "as unknown and openai.daily_budget_usd cannot count it; set openai.audio_price_per_minute_usd and "
        "openai.input_token_price_per_million_usd and output_token_price_per_million_usd (0 for a server of "
        "your own)"
    ]


def test_the_budget_reserves_uploads_at_the_models_built_in_price(store: Store) -> None:
    """gpt-4o-mini-transcribe is $0.003 a minute: two 10-minute uploads fit in $0.07, a third
    does not (at the old flat $0.006 only one would have)."""
    prices = OpenAIConfig(transcription_model="gpt-4o-mini-transcribe", daily_budget_usd=0.07)
    meter = usage.BudgetGate().meter(store, prices, call_id=1, now=NOW)
    for _ in range(2):
        meter.spent(meter.reserve(600, "gpt-4o-mini-transcribe"), 600, 0, 0)
    with pytest.raises(BudgetReached):
        meter.reserve(600, "gpt-4o-mini-transcribe")


def test_the_budget_counts_the_analysis_at_its_built_in_price(store: Store) -> None:
    store.add_usage(call_id=1, at=NOW - 60, kind="analysis", model="gpt-4o", input_tokens=100_000, output_tokens=20_000)
    prices = OpenAIConfig(analysis_model="gpt-4o", daily_budget_usd=0.40)  # $0.25 + $0.20 spent
    assert usage.BudgetGate().hold(store, prices, NOW) == usage.next_day(NOW)


def test_check_warns_when_a_price_of_0_makes_openai_look_free() -> None:
    """A config copied from the older example set the token prices to 0 (explicitly: free)."""
    old = OpenAIConfig(
        api_key="sk-x",
        audio_price_per_minute_usd=0.006,
        input_token_price_per_million_usd=0.0,
        output_token_price_per_million_usd=0.0,
    )
    assert free_on_openai_warning(old) == (
        "a token price = 0 (gpt-4o-mini: $0.15 / $0.60 per million tokens), but the server is OpenAI's, which "
        "bills it (list price as of 2026-12-05): remove the price keys to use the list prices"
    )
    assert free_on_openai_warning(OpenAIConfig()) is None
    local = old.model_copy(update={"chat_base_url": "http://127.0.0.1:8080/v1"})
    assert free_on_openai_warning(local) is None, "a server of one's own may well be free"
