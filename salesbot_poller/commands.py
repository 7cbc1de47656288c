"""The `check`, `status`, `auth` and `retry` commands: what the admin reads at the terminal.

None prints a secret: `check` prints our own texts about each service; `status` and `retry`
read only the database (and the CLI redacts every line they print); `auth` says where the
tokens went, never what they are.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import openai

from salesbot_poller import usage
from salesbot_poller.app import authorise_amo, build_amo, build_notifier, build_openai
from salesbot_poller.config import Config
from salesbot_poller.domain import Stage
from salesbot_poller.errors import ConfigError, FatalError, SalesbotError, TransientError
from salesbot_poller.openai_errors import map_openai_error
from salesbot_poller.pipeline import LAST_CYCLE_KEY
from salesbot_poller.recovery import resume_stage
from salesbot_poller.store import Call, Store
from salesbot_poller.throttle import AmoPause, AmoPaused


def _check_amocrm(config: Config, store: Store, clock: Callable[[], datetime]) -> str:
    account = build_amo(config, store, clock).account()
    return f"ok (account {account.get('name', '?')!r}, id {account.get('id', '?')})"


def _check_openai(config: Config) -> str:
    client = build_openai(config).with_options(timeout=20)
    try:
        listed = {m.id for m in client.models.list()}
    except openai.NotFoundError:
        return "reachable, but the server has no model list; models not verified"
    except openai.OpenAIError as exc:
        raise map_openai_error(exc, "model list", "-") from None
    wanted = [config.openai.transcription_model, config.openai.analysis_model]
    wanted += [config.openai.diarize_model] if config.openai.diarize_model else []
    missing = [m for m in wanted if m not in listed]
    if missing:
        return f"key ok, but the server does not list {', '.join(missing)}: check the model names in [openai]"
    return f"ok ({', '.join(wanted)} available)"


def _check_telegram(config: Config) -> str:
    """The bot, and every chat it posts to: the default, the routed ones, the alert chat."""
    tg = config.telegram
    others = [route.chat_id for route in tg.routes.values()] + ([tg.alert_chat_id] if tg.alert_chat_id else [])
    return f"ok (bot {build_notifier(config).check(others)}, chat {tg.chat_id})"


def check(config: Config, store: Store, clock: Callable[[], datetime], out: Callable[[str], None]) -> bool:
    """One line per service; True when every service answered as expected."""
    checks: list[tuple[str, Callable[[], str]]] = [
        ("amocrm", lambda: _check_amocrm(config, store, clock)),
        ("openai", lambda: _check_openai(config)),
        ("telegram", lambda: _check_telegram(config)),
    ]
    ok = True
    for name, run in checks:
        try:
            out(f"{name}: {run()}")
        except SalesbotError as exc:
            ok = False
            out(f"{name}: FAILED: {exc}")
    return ok


def _when(timestamp: int | None) -> str:
    if not timestamp:
        return "never"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def status(store: Store, out: Callable[[str], None], config: Config | None = None, now: int | None = None) -> None:
    """Calls per stage, the last cycle, the cursor, the latest errors, and (with `config`)
    today's and this month's OpenAI usage and estimated cost."""
    counts = store.stage_counts()
    out(f"calls: {sum(counts.values())}")
    for stage in Stage:
        if counts.get(stage.value):
            out(f"  {stage.value:<15} {counts[stage.value]}")
    raw = store.get_state(LAST_CYCLE_KEY)
    if raw:
        last = json.loads(raw)
        counters = " ".join(
            f"{k}={last.get(k, 0)}"
            for k in (
                "events",
                "new",
                "transcribed",
                "analysed",
                "notified",
                "alerted",
                "skipped",
                "deferred",
                "failed",
            )
        )
        result = f"error: {last['error']}" if last.get("error") else "ok"
        out(f"last cycle: {_when(last.get('at'))}, {last.get('seconds', 0)} s, {result}")
        out(f"  {counters}")
    else:
        out("last cycle: never")
    out(f"cursor: {_when(store.cursor())}")
    moment = int(time.time()) if now is None else now
    try:  # a 403 (or a long Retry-After) pauses amoCRM; the admin should see until when, and why
        AmoPause(lambda: datetime.fromtimestamp(moment, UTC), store).check()
    except AmoPaused as exc:
        out(f"amocrm: {exc}")
    errors = store.recent_errors()
    out("last errors:" if errors else "last errors: none")
    for call in errors:
        retry = "" if call.stage == Stage.FAILED else f", next try {_when(call.next_attempt_at)}"
        out(
            f"  call {call.id} ({call.entity_type}/{call.entity_id}, {call.stage}, attempt {call.attempts}{retry}): "
            f"{call.last_error}"
        )
    if config is not None:
        for line in usage.status_lines(config.openai, moment):
            out(line)
    failed = store.failed_calls()
    out(f"failed calls: {len(failed)}" + (" (`salesbot-poller retry --failed` puts them back)" if failed else ""))
    for call in failed[:FAILED_SHOWN]:
        out(f"  {_failure_line(call)}")
    if len(failed) > FAILED_SHOWN:
        out(f"  ... and {len(failed) - FAILED_SHOWN} more")


FAILED_SHOWN = 20


def _failure_line(call: Call) -> str:
    return (
        f"call {call.id} ({call.entity_type}/{call.entity_id}), reached {resume_stage(call).value}, "
        f"failed {_when(call.updated_at)} after {call.attempts} attempt(s): {call.last_error}"
    )


def retry(store: Store, call_ids: list[int], all_failed: bool, now: int, out: Callable[[str], None]) -> bool:
    """Put failed calls back at the stage they reached; False if any id is unknown or not failed.

    A call resumes from its last stored artifact (`recovery.resume_stage`): a transcription or
    analysis that succeeded is never paid for again. Attempts and the 24 h window restart.
    """
    ok = True
    calls: list[Call] = store.failed_calls()[::-1] if all_failed else []
    for call_id in call_ids:
        call = store.find_call(call_id)
        if call is None:
            out(f"call {call_id}: no such call (see `salesbot-poller status`)")
            ok = False
        elif call.stage != Stage.FAILED:
            out(f"call {call_id}: not failed (stage {call.stage}): nothing to retry")
            ok = False
        elif all(c.id != call.id for c in calls):
            calls.append(call)
    for call in calls:
        stage = resume_stage(call)
        store.requeue(call, stage, now)
        out(f"call {call.id} ({call.entity_type}/{call.entity_id}): requeued at {stage.value}")
    if all_failed and not calls:
        out("no failed calls")
    return ok


def auth(
    config: Config, store: Store, clock: Callable[[], datetime], code: str, config_arg: str, out: Callable[[str], None]
) -> None:
    """Exchange an amoCRM authorization code for OAuth tokens, store them, say what is next.

    `ConfigError` when the OAuth keys are missing; `FatalError` when amoCRM refused the code
    or could not be reached (the stored tokens, if any, are untouched then).
    """
    amo = config.amocrm
    problems = [
        f"amocrm.{key}: required for `auth`"
        for key, value in (
            ("base_url", amo.base_url),
            ("client_id", amo.client_id),
            ("client_secret", amo.client_secret.get_secret_value()),
            ("redirect_uri", amo.redirect_uri),
        )
        if not value
    ]
    if not amo.uses_oauth:
        problems.append("amocrm.long_lived_token: set, so OAuth is not used; remove it to use `auth`")
    if problems:
        raise ConfigError(problems)
    try:
        expires_at = authorise_amo(config, store, clock, code.strip())
    except TransientError as exc:
        raise FatalError(
            f"{exc}: try again; if amoCRM then says the code was revoked, get a new one (a code is single-use)"
        ) from None
    flag = f" --config {config_arg}" if config_arg else ""
    out(f"amocrm: authorised; tokens stored in {config.storage.database}, renewed automatically")
    out(f"  access token valid until {_when(expires_at)}")
    out(f"next: salesbot-poller{flag} check")
    out("then: systemctl enable --now salesbot   (or restart it if it is already running)")
