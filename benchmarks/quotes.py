"""The quote threshold of `services/quotes.py`, measured on the eval set.

Run from the repository root:
    .venv/bin/python benchmarks/quotes.py [--runs 5]

Quotes, each looked up in its own call's transcript by the real `QuoteIndex`:
- real: every quote of `eval/*.expected.toml` (verbatim) and the `loose` ones of
  `eval/quotes.toml` (words really said, quoted the way models quote: case, punctuation, ё/е,
  a clause left out with "…"), and each real quote again with one word's ending changed and
  with its last word dropped (slips a model makes when it quotes from memory);
- made up: the `invented` ones of `eval/quotes.toml` (paraphrases and inventions about the
  same call) and each real quote with its longest word replaced by another word of the
  call (a fact changed: a day, a sum, a name).
Table 1: per threshold, the share of real quotes verified and of made-up ones rejected;
the lowest score of a real quote and the highest of a made-up one. Table 2: the time to look
up every quote of the 40-minute call (08), min / median / max over `--runs`.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tomllib
from pathlib import Path

from salesbot_poller.services.quotes import QUOTE_THRESHOLD, QuoteIndex, normalise

EVAL = Path(__file__).resolve().parent.parent / "eval"
THRESHOLDS = (0.6, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.95)


def _inflect(quote: str) -> str:
    words = quote.split()
    longest = max(range(len(words)), key=lambda i: len(words[i]))
    word = words[longest]
    words[longest] = word[:-2] + ("ой" if not word.endswith("ой") else "ая") if len(word) > 4 else word
    return " ".join(words)


def _swap_fact(quote: str, vocabulary: list[str]) -> str:
    words = quote.split()
    longest = max(range(len(words)), key=lambda i: len(words[i]))
    own = normalise(words[longest])
    other = next((w for w in vocabulary if len(w) >= 6 and w != own and w[:3] != own[:3]), "никогда")
    words[longest] = other
    return " ".join(words)


def quote_sets() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(call, quote) pairs: real ones, made-up ones."""
    extra = tomllib.loads((EVAL / "quotes.toml").read_text(encoding="utf-8"))
    real: list[tuple[str, str]] = []
    made_up: list[tuple[str, str]] = []
    for expected in sorted(EVAL.glob("*.expected.toml")):
        call = expected.name.removesuffix(".expected.toml")
        quotes = list(tomllib.loads(expected.read_text(encoding="utf-8")).get("quotes", {}).values())
        vocabulary = sorted(set(QuoteIndex((EVAL / f"{call}.txt").read_text(encoding="utf-8")).words), key=len)[::-1]
        for quote in quotes:
            real.append((call, quote))
            if len(quote.split()) >= 4:
                real.append((call, _inflect(quote)))
                real.append((call, " ".join(quote.split()[:-1])))
                made_up.append((call, _swap_fact(quote, vocabulary)))
        real += [(call, q) for q in extra.get(call, {}).get("loose", [])]
        made_up += [(call, q) for q in extra.get(call, {}).get("invented", [])]
    return real, made_up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    indexes = {p.stem: QuoteIndex(p.read_text(encoding="utf-8")) for p in EVAL.glob("*.txt")}
    real, made_up = quote_sets()

    def scores(pairs: list[tuple[str, str]]) -> list[float]:
        return [m.score if (m := indexes[call].find(quote)) else 0.0 for call, quote in pairs]

    real_scores, made_scores = scores(real), scores(made_up)
    print(f"quotes: {len(real)} real, {len(made_up)} made up, over {len(indexes)} calls")
    print(f"lowest real: {min(real_scores):.3f}   highest made up: {max(made_scores):.3f}")
    print()
    print("threshold | real verified | made up rejected")
    print("----------|---------------|-----------------")
    for threshold in THRESHOLDS:
        ok = sum(s >= threshold for s in real_scores)
        rejected = sum(s < threshold for s in made_scores)
        mark = "  <- QUOTE_THRESHOLD" if threshold == QUOTE_THRESHOLD else ""
        print(
            f"{threshold:>9} | {ok:>3}/{len(real)} {100 * ok / len(real):>5.1f}% |"
            f" {rejected:>3}/{len(made_up)} {100 * rejected / len(made_up):>5.1f}%{mark}"
        )
    long_call = next(stem for stem in indexes if stem.startswith("08-"))
    pairs = [(c, q) for c, q in real + made_up if c == long_call]
    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        index = QuoteIndex((EVAL / f"{long_call}.txt").read_text(encoding="utf-8"))
        for _, quote in pairs:
            index.find(quote)
        times.append(time.perf_counter() - started)
    print()
    print("what                                   | min      | median   | max")
    print("---------------------------------------|----------|----------|---------")
    print(
        f"index + {len(pairs):>2} quotes in the 40-minute call   | {min(times) * 1000:>5.1f} ms |"
        f" {statistics.median(times) * 1000:>5.1f} ms | {max(times) * 1000:>5.1f} ms"
    )


if __name__ == "__main__":
    main()
