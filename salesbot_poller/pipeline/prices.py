"""What OpenAI's models cost: the list prices built in, the config's prices over them.

Contract:
- The built-in table holds OpenAI's list prices as of `PRICES_AS_OF` (standard tier, no
  batch or cache discount): speech-to-text per audio minute, chat models per million tokens
  in and out. With them, cost and the daily budget are real from the first day on OpenAI.
- `openai.audio_price_per_minute_usd` and the token prices, when set, replace the table
  for every model of their kind (0 = free: a server of one's own). Unset (None, the
  default) means the table's price of the model; a model the table lacks then has no price.
- `audio_price(ai, model)` and `token_prices(ai, model)` say the price in force, None where
  there is none. A dated snapshot ("gpt-4o-mini-2024-07-18") is priced as its model.
- A transcription is priced by its audio minutes only (OpenAI's per-minute estimate covers
  the tokens of the gpt-4o transcription models); anything else (analysis, objection
  grouping) by its tokens.
- `Cost`: an estimate in USD and the models that could not be priced; its `text()` says
  "price not set for <model>" instead of passing an unknown for $0.00.
- `price_warning(ai)`: one line naming each configured model without a price (for `check`),
  None when every one has a price. `free_on_openai_warning(ai)`: one line when a price set
  to 0 makes a model OpenAI itself bills look free (a config copied from an older example
  that set the token prices to 0), None otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from salesbot_poller.config import OpenAIConfig

# Taken from OpenAI's model pages and price list (developers.openai.com/api/docs/pricing);
# verify there before changing. gpt-4o-transcribe is billed by tokens ($2.50 in / $10.00 out
# per million), for which OpenAI's estimate is the per-minute price below.
PRICES_AS_OF = "2026-12-05"
AUDIO_PER_MINUTE_USD: dict[str, float] = {
    "whisper-1": 0.006,
    "gpt-4o-transcribe": 0.006,
    "gpt-4o-mini-transcribe": 0.003,
}
TOKENS_PER_MILLION_USD: dict[str, tuple[float, float]] = {  # (input, output)
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
}
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")
AUDIO_KEY = "openai.audio_price_per_minute_usd"
TOKEN_KEYS = "openai.input_token_price_per_million_usd and output_token_price_per_million_usd"


def _listed(model: str) -> str:
    return _SNAPSHOT.sub("", model.strip().lower())


def audio_price(ai: OpenAIConfig, model: str) -> float | None:
    """USD per audio minute of speech-to-text `model`; None: no price known."""
    if ai.audio_price_per_minute_usd is not None:
        return ai.audio_price_per_minute_usd
    return AUDIO_PER_MINUTE_USD.get(_listed(model))


def token_prices(ai: OpenAIConfig, model: str) -> tuple[float | None, float | None]:
    """USD per million (input, output) tokens of `model`; None where no price is known."""
    listed = TOKENS_PER_MILLION_USD.get(_listed(model), (None, None))
    given = (ai.input_token_price_per_million_usd, ai.output_token_price_per_million_usd)
    return (
        given[0] if given[0] is not None else listed[0],
        given[1] if given[1] is not None else listed[1],
    )


def row_usd(ai: OpenAIConfig, kind: str, model: str, seconds: float, tokens_in: int, tokens_out: int) -> float | None:
    """What one usage total of `kind` and `model` cost; None when it needs a price there is none of."""
    if kind == "transcription":
        per_minute = audio_price(ai, model)
        if per_minute is None:
            return None if seconds > 0 else 0.0
        return seconds / 60 * per_minute
    price_in, price_out = token_prices(ai, model)
    if (tokens_in and price_in is None) or (tokens_out and price_out is None):
        return None
    return tokens_in / 1e6 * (price_in or 0.0) + tokens_out / 1e6 * (price_out or 0.0)


@dataclass(frozen=True)
class Cost:
    """An estimate in USD of what could be priced, and the models that could not."""

    usd: float = 0.0
    unpriced: tuple[str, ...] = ()

    def text(self, digits: int = 2) -> str:
        """The estimate as shown: `$1.23`; with an unpriced model `price not set for m` (when
        nothing was priced) or `$1.23 + price not set for m`."""
        if not self.unpriced:
            return f"${self.usd:.{digits}f}"
        missing = f"price not set for {', '.join(self.unpriced)}"
        return f"${self.usd:.{digits}f} + {missing}" if self.usd > 0 else missing


def free_on_openai_warning(ai: OpenAIConfig) -> str | None:
    """See the module contract."""
    zeros = []
    listed = _listed(ai.transcription_model)
    if ai.transcription.needs_key and ai.audio_price_per_minute_usd == 0 and listed in AUDIO_PER_MINUTE_USD:
        zeros.append(f"{AUDIO_KEY} = 0 ({ai.transcription_model}: ${AUDIO_PER_MINUTE_USD[listed]} a minute)")
    chat = TOKENS_PER_MILLION_USD.get(_listed(ai.analysis_model))
    given = (ai.input_token_price_per_million_usd, ai.output_token_price_per_million_usd)
    if ai.chat.needs_key and chat is not None and 0 in given:
        zeros.append(f"a token price = 0 ({ai.analysis_model}: ${chat[0]:.2f} / ${chat[1]:.2f} per million tokens)")
    if not zeros:
        return None
    return (
        f"{'; '.join(zeros)}, but the server is OpenAI's, which bills it (list price as of {PRICES_AS_OF}): "
        "remove the price keys to use the list prices"
    )


def price_warning(ai: OpenAIConfig) -> str | None:
    """See the module contract."""
    speech = [("openai.transcription_model", ai.transcription_model)]
    speech += [("openai.diarize_model", ai.diarize_model)] if ai.diarize_model else []
    missing = [f"{model} ({key})" for key, model in speech if audio_price(ai, model) is None]
    keys = [AUDIO_KEY] if missing else []
    if None in token_prices(ai, ai.analysis_model):
        missing.append(f"{ai.analysis_model} (openai.analysis_model)")
        keys.append(TOKEN_KEYS)
    if not missing:
        return None
    return (
        f"price not set for {', '.join(missing)}: not in the built-in OpenAI price list (as of {PRICES_AS_OF}), "
        f"so its cost shows as unknown and openai.daily_budget_usd cannot count it; set {' and '.join(keys)} "
        "(0 for a server of your own)"
    )
