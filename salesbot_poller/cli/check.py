"""The `check` and `auth` commands: they talk to the services.

Neither prints a secret: `check` prints our own texts about each service; `auth` says where
the tokens went, never what they are.

`check` changes nothing on disk: a SQLite database that does not exist yet is not created
(an in-memory one stands in; the service creates the real one), a relative SQLite path or
one whose directory is missing fails the check naming `storage.database`
(`cli.check_store`). `check --show-config` prints the merged config and checks nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import tomllib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import openai

from salesbot_poller.app import authorise_amo, build_amo, build_notifier, build_openai
from salesbot_poller.cli.check_store import IN_MEMORY, database_problems, open_store
from salesbot_poller.cli.common import EXIT_CHECK_FAILED, EXIT_OK, redacting_out, utc_now, when_text, zone
from salesbot_poller.cli.profiles import profile_problems
from salesbot_poller.config import (
    FILE_LIMIT,
    Config,
    Endpoint,
    Origins,
    config_path,
    read_text,
    safe_url,
    secret_keys,
    sections,
)
from salesbot_poller.errors import ConfigError, FatalError, PermanentError, SalesbotError, TransientError
from salesbot_poller.pipeline.lead_fields import field_problems
from salesbot_poller.pipeline.prices import free_on_openai_warning, price_warning
from salesbot_poller.pipeline.profiles import profile_conflicts
from salesbot_poller.pipeline.usage import budget_warning
from salesbot_poller.services.analysis import SchemaIgnored, probe_structured_output
from salesbot_poller.services.openai_errors import lacks_v1, map_openai_error, wrong_path
from salesbot_poller.store import Store

CHECK_TIMEOUT = 20.0  # per request: a cold local model may take a while to load
MODELS_SHOWN = 10  # of a server's models, when the configured one is not among them
# A supergroup's or channel's id as the web apps and t.me/c/ links show it: without -100.
BARE_GROUP_ID = re.compile(r"-?([1-9]\d{9})")


def inline_secrets(path: Path) -> list[str]:
    """The secret keys (`section.key`) set to a value in the TOML file itself; not those from
    a `<key>_file`, the environment or a systemd credential. [] when it cannot be read."""
    try:
        raw = tomllib.loads(read_text(path, FILE_LIMIT))
    except (OSError, ValueError):  # FileRejected, TOMLDecodeError: `load_config` said why
        return []
    found = []
    for section, model in sections().items():
        part = raw.get(section)
        if isinstance(part, dict):
            found += [f"{section}.{key}" for key in secret_keys(model) if part.get(key) not in (None, "")]
    return found


def config_mode_warning(path: Path) -> str | None:
    """One line when the config file holds a secret and group or others may read it; None
    when it holds none, is private, or cannot be read."""
    keys = inline_secrets(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if not keys or not mode & (stat.S_IRGRP | stat.S_IROTH):
        return None
    who = " and ".join(w for w, bit in (("group", stat.S_IRGRP), ("others", stat.S_IROTH)) if mode & bit)
    return (
        f"config: warning: {path} holds {', '.join(keys)} and is readable by {who} (mode {mode:04o}): chmod 600 {path}"
    )


def config_findings(config: Config) -> tuple[list[str], list[str]]:
    """What a valid config still gets wrong: (problems, warnings), one line each.

    Problems fail `check` (exit 1, as an amoCRM id a profile names that the account lacks):
    the config cannot do what it says: a profile whose minimum duration is over its maximum
    skips every answered call it takes, a profile shadowed by an earlier one is never chosen
    (`profiles.profile_conflicts`). Warnings do not: a daily
    budget with every price 0 is never reached, but calls are processed as they should be, and
    a server of one's own costs nothing (`usage.budget_warning`); a model with no price at all
    (not in the built-in list, none configured) leaves its cost unknown (`prices.price_warning`,
    one line for all such models), and a price of 0 for a model OpenAI bills undercounts it
    (`prices.free_on_openai_warning`).
    """
    found = (price_warning(config.openai), free_on_openai_warning(config.openai), budget_warning(config.openai))
    warnings = [line for line in found if line]
    return profile_conflicts(config), warnings


def _check_amocrm(config: Config, store: Store, clock: Callable[[], datetime]) -> str:
    account = build_amo(config, store, clock).account()
    return f"ok (account {account.get('name', '?')!r}, id {account.get('id', '?')})"


def _check_lead_fields(config: Config, store: Store, clock: Callable[[], datetime]) -> str:
    """The lead fields the scores go to exist and are of the right type (`lead_fields`)."""
    fields = build_amo(config, store, clock).custom_fields("leads")
    problems = field_problems(config, fields)
    if problems:
        raise PermanentError("; ".join(problems))
    amo = config.amocrm
    named = [f"score field {amo.score_field_id}"] if amo.score_field_id else []
    named += [f"last call field {amo.last_call_field_id}"] if amo.last_call_field_id else []
    if amo.tag_low_score.strip():
        named.append(f"tag «{amo.tag_low_score.strip()}» below {amo.tag_below_score}")
    return f"ok ({', '.join(named)})"


def _check_profiles(config: Config, store: Store, clock: Callable[[], datetime]) -> str:
    """Every pipeline, status, user and group a `[[profiles]]` names exists in the account."""
    directory = build_amo(config, store, clock).directory()
    problems = profile_problems(config, directory)
    if problems:
        raise PermanentError("\n  ".join([f"{len(problems)} id(s) not in this account:", *problems]))
    names = ", ".join(f"«{p.name}»" for p in config.profiles)
    return f"ok ({len(config.profiles)}: {names}; `salesbot-poller profiles` lists the account's ids)"


def _model_list(config: Config, endpoint: Endpoint) -> list[str] | None:
    """The model ids one server offers (GET /models), in its order; None when it has no model
    list. A 404 at a base URL without `/v1` whose `/v1/models` answers is the wrong URL: the
    error says which setting to change and to what."""
    client = build_openai(config, endpoint).with_options(timeout=CHECK_TIMEOUT)
    try:
        return [m.id for m in client.models.list()]
    except openai.NotFoundError as exc:
        if lacks_v1(endpoint) and _answers_at_v1(client, endpoint):
            raise wrong_path(exc, endpoint) from None
        return None
    except openai.OpenAIError as exc:
        raise map_openai_error(exc, "model list", "-", endpoint) from None


def _answers_at_v1(client: openai.OpenAI, endpoint: Endpoint) -> bool:
    try:
        client.with_options(base_url=f"{endpoint.base_url.rstrip('/')}/v1").models.list()
    except openai.OpenAIError:
        return False
    return True


def _not_offered(setting: str, model: str, endpoint: Endpoint, offered: list[str]) -> str:
    shown = ", ".join(offered[:MODELS_SHOWN]) or "nothing"
    more = f" and {len(offered) - MODELS_SHOWN} more" if len(offered) > MODELS_SHOWN else ""
    return f"{setting}: {model} is not offered by {endpoint.shown_url}; it offers: {shown}{more}"


def _check_openai(config: Config) -> str:
    """The models of `[openai]` on the server each one is sent to (speech-to-text and chat
    may be two servers), each server's models listed once. A model the server does not offer
    is named with what it does offer (the first `MODELS_SHOWN`): a failure on OpenAI itself, a
    warning elsewhere (llama-server answers under any model name). A key is said to be
    accepted only when the model list was read with it."""
    ai = config.openai
    speech = [("openai.transcription_model", ai.transcription_model)]
    speech += [("openai.diarize_model", ai.diarize_model)] if ai.diarize_model else []
    wanted: dict[Endpoint, list[tuple[str, str]]] = {}
    for endpoint, models in ((ai.transcription, speech), (ai.chat, [("openai.analysis_model", ai.analysis_model)])):
        wanted.setdefault(endpoint, []).extend(models)
    available: list[str] = []
    accepted: list[str] = []
    unlisted: list[str] = []
    missing: list[str] = []
    fatal = False
    for endpoint, models in wanted.items():
        offered = _model_list(config, endpoint)
        keyed = bool(endpoint.api_key.get_secret_value())
        if offered is None:
            key = f" and the key in {endpoint.key_setting}" if keyed else ""
            names = ", ".join(model for _, model in models)
            unlisted.append(f"{endpoint.host} has no model list: {names}{key} not verified there")
            continue
        accepted += [endpoint.key_setting] if keyed else []
        for setting, model in models:
            if model in offered:
                available.append(model)
            else:
                missing.append(_not_offered(setting, model, endpoint, offered))
                fatal = fatal or endpoint.needs_key  # OpenAI itself serves no model it does not list
    if missing and fatal:
        raise PermanentError("\n  ".join(missing))
    parts = [f"{', '.join(available)} available"] if available else []
    parts += [f"key {', '.join(accepted)} accepted"] if accepted else []
    if missing:
        return "warning: " + "\n  ".join([*missing, *unlisted, *(["; ".join(parts)] if parts else [])])
    if not parts:
        return "reachable, but " + "; ".join(unlisted)
    return f"ok ({'; '.join(parts + unlisted)})"


def _check_structured_output(config: Config) -> str:
    """One tiny request in a one-field JSON schema to the chat server: the analysis cannot
    work with a server that ignores the schema, so that is a failure, said plainly."""
    endpoint, model = config.openai.chat, config.openai.analysis_model
    client = build_openai(config, endpoint).with_options(timeout=CHECK_TIMEOUT)
    try:
        how = probe_structured_output(client, model, endpoint)
    except SchemaIgnored as exc:
        raise PermanentError(
            f"chat model {model} at {endpoint.host} {exc}: the analysis needs structured output; "
            "see docs/on-premises.md"
        ) from None
    return f"structured output ok ({how})"


def _check_telegram(config: Config) -> str:
    """The bot, and every chat it posts to: the default, the routed ones, the alert chat, the
    profiles' chats. A chat Telegram does not know whose id looks like a supergroup's without
    its -100 (as the web apps and t.me/c/ links show it) gets the id it probably is."""
    tg = config.telegram
    others = [route.chat_id for route in tg.routes.values()] + ([tg.alert_chat_id] if tg.alert_chat_id else [])
    others += [profile.chat_id for profile in config.profiles if profile.chat_id]
    try:
        return f"ok (bot {build_notifier(config).check(others)}, chat {tg.chat_id})"
    except SalesbotError as exc:
        found = re.search(r"getChat (\S+): .*chat not found", str(exc))
        bare = BARE_GROUP_ID.fullmatch(found.group(1)) if found else None
        if bare is None:
            raise
        keys = [key for key, chat in _chat_keys(config) if chat == found.group(1)]  # type: ignore[union-attr]
        hint = f"group and channel ids start with -100; did you mean -100{bare.group(1)}? ({', '.join(keys)})"
        raise type(exc)(f"{exc}; {hint}") from None


def _chat_keys(config: Config) -> list[tuple[str, str]]:
    """Every chat the config names, with its key."""
    tg = config.telegram
    found = [("telegram.chat_id", tg.chat_id), ("telegram.alert_chat_id", tg.alert_chat_id)]
    found += [(f"telegram.routes.{user}.chat_id", route.chat_id) for user, route in tg.routes.items()]
    return found + [(f"profiles[{i}].chat_id", p.chat_id) for i, p in enumerate(config.profiles, 1)]


def check(
    config: Config,
    store: Store,
    clock: Callable[[], datetime],
    out: Callable[[str], None],
    config_file: Path | None = None,
    amocrm_skipped: str = "",
) -> bool:
    """One line per service, and one for the chat model's structured output (after the
    model list, when that passed); True when every service answered as expected and the config
    has no contradiction (`config_findings`).

    First, a warning line when `config_file` holds a secret others can read: a warning, not
    a failure (the services may all work), so it does not change the result. Then the
    config's own contradictions (`config_findings`), before any service is asked.
    `amocrm_skipped`: why amoCRM is not asked (said on its line; not a failure).
    """
    warning = config_mode_warning(config_file) if config_file is not None else None
    if warning:
        out(warning)
    problems, warnings = config_findings(config)
    for line in warnings:
        out(f"config: warning: {line}")
    for line in problems:
        out(f"config: FAILED: {line}")
    checks: list[tuple[str, Callable[[], str]]] = [
        ("amocrm", lambda: _check_amocrm(config, store, clock)),
        # Only when the scores go to lead fields, and amoCRM answered: a field is named by its key.
        ("amocrm lead fields", lambda: _check_lead_fields(config, store, clock)),
        ("profiles", lambda: _check_profiles(config, store, clock)),
        ("openai", lambda: _check_openai(config)),
        # Only once the server answered the model list: its failure would repeat the one above.
        ("chat model", lambda: _check_structured_output(config)),
        ("telegram", lambda: _check_telegram(config)),
    ]
    failed: set[str] = {"config"} if problems else set()
    skipped = {"amocrm"} if amocrm_skipped else set()
    if amocrm_skipped:
        out(f"amocrm: not checked: {amocrm_skipped}")
    for name, run in checks:
        if name == "amocrm" and amocrm_skipped:
            continue
        if name == "chat model" and "openai" in failed:
            continue
        if name == "amocrm lead fields" and ("amocrm" in failed | skipped or not config.amocrm.writes_lead_fields):
            continue
        if name == "profiles" and ("amocrm" in failed | skipped or not config.profiles):
            continue
        try:
            out(f"{name}: {run()}")
        except SalesbotError as exc:
            failed.add(name)
            out(f"{name}: FAILED: {exc}")
    return not failed


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
    out(f"amocrm: authorised; tokens stored in {safe_url(config.storage.database)}, renewed automatically")
    out(f"  access token valid until {when_text(expires_at, zone(config))}")
    out(f"next: salesbot-poller{flag} check")
    out("then: systemctl enable --now salesbot   (or restart it if it is already running)")


def run(args: argparse.Namespace, config: Config | None) -> int:
    """`check`: the config line, then `check` (exit 1 when a service failed, or the config
    contradicts itself: `config_findings`); `auth --code`:
    `auth`."""
    assert config is not None  # loaded by `cli.main`
    origins: Origins | None = getattr(args, "origins", None)
    config_file = config_path(args.config, os.environ)
    if args.command == "auth":
        store = Store.open(config.storage.database, int(utc_now().timestamp()))
        try:
            auth(config, store, utc_now, args.code, args.config or "", print)
        finally:
            store.close()
        return EXIT_OK
    out = redacting_out(config)
    if args.show_config:
        from salesbot_poller.cli.show_config import show_config

        show_config(config, origins or Origins(), config_file, out)
        return EXIT_OK
    url = config.storage.database
    problems, there = database_problems(url, origins)
    note = "" if there or problems else " (not created yet: the service creates it)"
    skipped = ""
    if not there and config.amocrm.uses_oauth:
        # The tokens may be rotated by a check: a new pair kept only in memory would be lost.
        skipped = "OAuth tokens are kept in the database, which does not exist yet (`auth --code` creates it)"
    store = open_store(url if there else IN_MEMORY)
    try:
        out(f"config: ok ({config.amocrm.base_url}, database {safe_url(url)}{note})")
        for problem in problems:
            out(f"config: FAILED: {problem}")
        passed = check(config, store, utc_now, out, config_file, amocrm_skipped=skipped)
        return EXIT_OK if passed and not problems else EXIT_CHECK_FAILED
    finally:
        store.close()
