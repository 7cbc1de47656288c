"""`salesbot-poller eval DIR`: the configured analysis measured on calls with known verdicts.

Contract: every `NAME.txt` in DIR with a `NAME.expected.toml` beside it (the format of
`eval/README.md`: `[verdicts]` per rubric id, `[score] expected` and `tolerance`, optional
`[call] direction = "in"|"out"`) is analysed by `analyzer` (the daemon's own: model, prompt,
rubric, redaction), one call after another, and a table is printed:
- per call: the expected and the computed score, their difference, the items whose verdict
  agrees, quotes found in the transcript of the quotes given, tokens, cost, seconds;
- agreement per rubric item over the calls whose expected file names it (an item "not
  assessed" by the model disagrees);
- the mean absolute score error (calls whose expected or computed score is none are left
  out) and how many calls are within their tolerance; quotes verified; mean tokens, cost
  and seconds per call.
A call whose analysis fails is one line with the error and counts as failed. Returns the
number of calls that failed (0 when all were analysed); `EvalError` when DIR has no call.
The calls' date is `EVAL_DAY` (a Tuesday), so "до пятницы" has one right date.
"""

from __future__ import annotations

import argparse
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from salesbot_poller.cli.common import EXIT_CHECK_FAILED, EXIT_CONFIG, EXIT_OK, err, load, redacting_out
from salesbot_poller.config import Config, OpenAIConfig, RubricItem
from salesbot_poller.domain import Analyzer, CallAnalysis, CallContext
from salesbot_poller.errors import PermanentError, TransientError
from salesbot_poller.pipeline.prices import row_usd, token_prices
from salesbot_poller.services.quotes import QuoteIndex

EVAL_DAY = datetime(2026, 11, 24, 11, 0)
_STAMP_SECONDS = 2.5  # words per second of speech, to estimate a duration without timestamps


class EvalError(Exception):
    """DIR holds nothing to evaluate, or an expected file cannot be read."""


@dataclass(frozen=True)
class Case:
    name: str
    transcript: str
    verdicts: dict[str, str]
    score: int | None
    tolerance: int
    direction: str = "in"


@dataclass
class EvalOutcome:
    case: Case
    analysis: CallAnalysis | None = None
    error: str = ""
    seconds: float = 0.0
    cost: float = 0.0
    agreed: dict[str, bool] = field(default_factory=dict)


def load_cases(directory: Path) -> list[Case]:
    """The calls of `directory` (see the module contract), in name order."""
    if not directory.is_dir():
        raise EvalError(f"{directory}: not a directory")
    cases = []
    for text in sorted(directory.glob("*.txt")):
        expected = text.with_name(f"{text.stem}.expected.toml")
        if not expected.is_file():
            continue
        try:
            data = tomllib.loads(expected.read_text(encoding="utf-8"))
            score = data.get("score", {})
            cases.append(
                Case(
                    name=text.stem,
                    transcript=text.read_text(encoding="utf-8"),
                    verdicts={str(k): str(v) for k, v in data["verdicts"].items()},
                    score=score.get("expected"),
                    tolerance=int(score.get("tolerance", 0)),
                    direction=str(data.get("call", {}).get("direction", "in")),
                )
            )
        except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
            raise EvalError(f"{expected}: {exc}") from None
    if not cases:
        raise EvalError(f"{directory}: no NAME.txt with a NAME.expected.toml beside it")
    return cases


def call_duration(transcript: str) -> int:
    """The last `[mm:ss]` of the transcript, or an estimate from its words."""
    index = QuoteIndex(transcript)
    stamped = [t for t in index.times if t is not None]
    return max(stamped) + 10 if stamped else int(len(index.words) / _STAMP_SECONDS)


def context_for(case: Case) -> CallContext:
    return CallContext(
        "out" if case.direction == "out" else "in",
        "Менеджер",
        "leads",
        "Клиент",
        "",
        "",
        call_duration(case.transcript),
        int(EVAL_DAY.timestamp()),
    )


def call_cost(analysis: CallAnalysis, prices: OpenAIConfig) -> float:
    """The analysis' tokens at the chat model's price (`pipeline.prices`); 0 when it has none
    (the report's header then says so)."""
    usage = analysis.usage
    if usage is None:
        return 0.0
    return row_usd(prices, "analysis", usage.model, 0.0, usage.input_tokens, usage.output_tokens) or 0.0


def evaluate(
    analyzer: Analyzer,
    cases: list[Case],
    prices: OpenAIConfig,
    clock: Callable[[], float] = time.monotonic,
) -> list[EvalOutcome]:
    outcomes = []
    for case in cases:
        started = clock()
        outcome = EvalOutcome(case)
        try:
            outcome.analysis = analyzer.analyse(case.transcript, context_for(case))
        except (TransientError, PermanentError) as exc:
            outcome.error = str(exc)
        outcome.seconds = clock() - started
        if outcome.analysis is not None:
            outcome.cost = call_cost(outcome.analysis, prices)
            got = {r.item_id: r.verdict for r in outcome.analysis.rubric}
            outcome.agreed = {item: got.get(item) == want for item, want in case.verdicts.items()}
        outcomes.append(outcome)
    return outcomes


def _tokens(analysis: CallAnalysis | None) -> int:
    usage = analysis.usage if analysis else None
    return usage.input_tokens + usage.output_tokens if usage else 0


def _quotes(analysis: CallAnalysis) -> tuple[int, int]:
    given = [r for r in analysis.rubric if r.verified is not None]
    return sum(bool(r.verified) for r in given), len(given)


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "—"


def print_eval_report(
    outcomes: list[EvalOutcome], rubric: tuple[RubricItem, ...], header: str, out: Callable[[str], None]
) -> None:
    """Print the table of the module contract."""
    out(header)
    out("")
    width = max(len(o.case.name) for o in outcomes)
    out(f"{'call':<{width}}  expected  score  error  items  quotes   tokens    cost $    sec")
    for o in outcomes:
        if o.analysis is None:
            out(f"{o.case.name:<{width}}  {o.case.score!s:>8}  failed: {o.error}")
            continue
        a = o.analysis
        error = abs(a.score - o.case.score) if a.score is not None and o.case.score is not None else None
        found, given = _quotes(a)
        mark = "" if error is None or error <= o.case.tolerance else " !"
        out(
            f"{o.case.name:<{width}}  {o.case.score!s:>8}  {a.score!s:>5}  {error!s:>5}"
            f"  {sum(o.agreed.values())}/{len(o.agreed):<3}  {found:>2}/{given:<3}  {_tokens(a):>7,}"
            f"  {o.cost:>8.4f}  {o.seconds:>5.1f}{mark}"
        )
    done = [o for o in outcomes if o.analysis is not None]
    out("")
    out("agreement per rubric item:")
    titles = {item.id: item.title for item in rubric}
    ids = list(dict.fromkeys([*titles, *(i for o in outcomes for i in o.case.verdicts)]))
    total_agreed = total = 0
    for item in ids:
        votes = [o.agreed[item] for o in done if item in o.agreed]
        if not votes:
            continue
        total_agreed, total = total_agreed + sum(votes), total + len(votes)
        agreed = sum(votes)
        out(f"  {item:<14} {titles.get(item, '')[:34]:<34} {agreed:>3}/{len(votes):<3} {_pct(agreed, len(votes)):>5}")
    out(f"  {'all items':<49} {total_agreed:>3}/{total:<3} {_pct(total_agreed, total):>5}")
    errors = [
        (abs(o.analysis.score - o.case.score), o.case.tolerance)
        for o in done
        if o.analysis is not None and o.analysis.score is not None and o.case.score is not None
    ]
    if errors:
        mean = sum(e for e, _ in errors) / len(errors)
        within = sum(e <= tol for e, tol in errors)
        out(f"mean absolute score error: {mean:.1f} points ({within} of {len(errors)} calls within their tolerance)")
    found = sum(_quotes(o.analysis)[0] for o in done if o.analysis is not None)
    given = sum(_quotes(o.analysis)[1] for o in done if o.analysis is not None)
    out(f"quotes verified in the transcript: {found}/{given} ({_pct(found, given)})")
    if done:
        n = len(done)
        tokens = sum(_tokens(o.analysis) for o in done) / n
        cost = sum(o.cost for o in done) / n
        seconds = sum(o.seconds for o in done) / n
        out(f"per call: {tokens:,.0f} tokens, ${cost:.4f}, {seconds:.1f} s (mean of {n})")
    failed = len(outcomes) - len(done)
    if failed:
        out(f"FAILED: {failed} call(s) not analysed")


def run(args: argparse.Namespace, config: Config | None) -> int:
    """`eval DIR`: no database, no amoCRM, no Telegram: the chat model only. Exit 1 when a call
    could not be analysed, 2 when DIR has nothing to evaluate. A DIR holding `trackers.toml`
    is the trackers' labelled set instead (`cli.evaluate_trackers`): no config is read."""
    from salesbot_poller.app import build_analyzer, build_openai  # the service clients
    from salesbot_poller.cli import eval_corrections, evaluate_trackers

    if args.corrections is not None:  # writes an eval set from the database instead of running one
        if args.directory is not None or args.since is None:
            err("eval: --corrections DIR takes --since DAY and no other DIR")
            return EXIT_CONFIG
        return eval_corrections.run(args, config if config is not None else load(args, require_secrets=False))
    if args.directory is None:
        err("eval: DIR is needed (or --corrections DIR --since DAY)")
        return EXIT_CONFIG
    directory = args.directory
    if evaluate_trackers.is_tracker_set(Path(directory)):  # the trackers' set needs no config at all
        return evaluate_trackers.run(args)
    if config is None:
        config = load(args, require_secrets=False)
    try:
        cases = load_cases(Path(directory))
    except EvalError as exc:
        err(f"eval: {exc}")
        return EXIT_CONFIG
    analyzer = build_analyzer(config, build_openai(config, config.openai.chat))
    prompt = config.analysis.prompt_file or "built-in"
    header = (
        f"eval: {len(cases)} calls in {directory}, model {config.openai.analysis_model},"
        f" rubric of {len(config.analysis.rubric)} items, prompt {prompt}"
    )
    if None in token_prices(config.openai, config.openai.analysis_model):
        header += (
            f"\n(cost shows 0: price not set for {config.openai.analysis_model}; "
            "set openai.input/output_token_price_per_million_usd to see it)"
        )
    outcomes = evaluate(analyzer, cases, config.openai)
    print_eval_report(outcomes, config.analysis.rubric, header, redacting_out(config, flush=True))
    return EXIT_CHECK_FAILED if any(o.analysis is None for o in outcomes) else EXIT_OK
