"""The composition root: the one place that builds sessions, clients and the store.

Nothing here runs at import. `build_app` is called by the CLI after the config is loaded;
tests build `App` themselves with fakes, or call `build_app` with a config that points at
loopback servers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, tzinfo

import openai
import requests
import telebot
from telebot import apihelper

from salesbot_poller import __version__
from salesbot_poller.config import Config, Endpoint, Profile
from salesbot_poller.domain import named_zone
from salesbot_poller.logs import add_secrets
from salesbot_poller.pipeline import profiles
from salesbot_poller.pipeline.context import App
from salesbot_poller.pipeline.delivery import DryRun
from salesbot_poller.services.amocrm import AmoClient
from salesbot_poller.services.amocrm_auth import LongLivedToken, OAuthTokens, TokenSource, exchange_code
from salesbot_poller.services.analysis import OpenAIAnalyzer
from salesbot_poller.services.objection_groups import OpenAIObjectionGrouper
from salesbot_poller.services.openai_limit import RequestLimit
from salesbot_poller.services.prompts import load_prompt
from salesbot_poller.services.recording_http import recording_session
from salesbot_poller.services.recordings import RecordingDownloader
from salesbot_poller.services.retry import until_stopped
from salesbot_poller.services.speech import OpenAITranscriber
from salesbot_poller.services.telegram import TelegramNotifier, request_sender
from salesbot_poller.services.telegram_updates import TelegramUpdates
from salesbot_poller.services.throttle import AmoPause, RateLimiter
from salesbot_poller.store import Store, private_dir

log = logging.getLogger(__name__)

USER_AGENT = f"salesbot-poller/{__version__}"
TRANSCRIBE_TIMEOUT = 300.0  # a long call takes a while to transcribe
BUDGET_CHUNK_SECONDS = 1200.0  # the longest upload when a daily budget is set (see build_app)
ANALYSE_TIMEOUT = 120.0


class _NoNetrcSession(requests.Session):
    """Proxy variables apply (Telegram often needs one), but ~/.netrc never does: its Basic
    credentials would replace our own Authorization header, or go to a host we are redirected to."""

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        original = response.request.url or ""
        strip = self.should_strip_auth(original, prepared_request.url or "")  # type: ignore[no-untyped-call]
        if "Authorization" in prepared_request.headers and strip:
            del prepared_request.headers["Authorization"]  # requests' own rule, without its netrc step


def _no_netrc(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


def _session() -> requests.Session:
    session = _NoNetrcSession()
    session.headers["User-Agent"] = USER_AGENT
    session.auth = _no_netrc  # a session-wide auth: requests then reads no ~/.netrc for a request
    return session


def build_amo(
    config: Config, store: Store, clock: Callable[[], datetime], stopping: threading.Event | None = None
) -> AmoClient:
    """The amoCRM client; with `stopping`, a retry's wait ends (`Stopped`) once it is set."""
    session = _session()
    amo = config.amocrm
    limiter = RateLimiter(amo.max_rps)  # one per process: API calls and token refreshes share it
    tokens: TokenSource
    if amo.uses_oauth:
        tokens = OAuthTokens(amo, store, session, clock, limiter=limiter)
    else:
        tokens = LongLivedToken(amo.long_lived_token.get_secret_value(), named_zone(amo.timezone))
    sleep = until_stopped(stopping) if stopping is not None else None
    return AmoClient(
        session,
        amo.base_url,
        tokens,
        clock,
        limiter=limiter,
        pause=AmoPause(clock, store, named_zone(amo.timezone)),
        sleep=sleep,
    )


def authorise_amo(config: Config, store: Store, clock: Callable[[], datetime], code: str) -> int:
    """`auth --code`: exchange the code and store the tokens; returns when they expire."""
    amo = config.amocrm
    return exchange_code(amo, store, _session(), clock, code, limiter=RateLimiter(amo.max_rps))


# What a server without keys is sent: the SDK refuses an empty key (and would then read
# OPENAI_API_KEY from the environment); such servers ignore the header.
NO_KEY = "no-key"


def build_openai(config: Config, endpoint: Endpoint | None = None) -> openai.OpenAI:
    """A client of one OpenAI-compatible server: `endpoint` (`config.openai.transcription` or
    `.chat`), by default `openai.base_url` with `openai.api_key`."""
    endpoint = endpoint or Endpoint(config.openai.base_url, config.openai.api_key)  # settings: the shared ones
    # Retries happen across cycles with the call's backoff; SDK retries would multiply them.
    return openai.OpenAI(
        api_key=endpoint.api_key.get_secret_value() or NO_KEY,
        base_url=endpoint.base_url,
        max_retries=0,
        timeout=ANALYSE_TIMEOUT,
    )


def build_notifier(config: Config) -> TelegramNotifier:
    # telebot keeps its server URL and transport in module globals: set them here, once.
    base = config.telegram.api_url
    # (telebot annotates these globals as None, hence the ignores.)
    apihelper.API_URL = base + "/bot{0}/{1}"  # type: ignore[assignment]
    apihelper.FILE_URL = base + "/file/bot{0}/{1}"  # type: ignore[assignment]
    apihelper.CONNECT_TIMEOUT = 10
    apihelper.READ_TIMEOUT = 30
    apihelper.CUSTOM_REQUEST_SENDER = request_sender(_session())  # type: ignore[assignment]
    bot = telebot.TeleBot(config.telegram.bot_token.get_secret_value(), threaded=False)
    return TelegramNotifier(bot, config.telegram.chat_id)


def build_updates(config: Config) -> TelegramUpdates | None:
    """The bot's command reader, when someone may command it (`telegram.command_chats` and
    `telegram.admins` both set); after `build_notifier`, whose transport it shares."""
    telegram = config.telegram
    if not (telegram.command_chats and telegram.admins):
        return None
    return TelegramUpdates(telebot.TeleBot(telegram.bot_token.get_secret_value(), threaded=False))


def account_zone(config: Config) -> tzinfo | None:
    """`amocrm.timezone` (validated at load); None: the server's local time zone."""
    return named_zone(config.amocrm.timezone)


def build_analyzer(
    config: Config, client: openai.OpenAI, limit: RequestLimit | None = None, profile: Profile | None = None
) -> OpenAIAnalyzer:
    """The configured analysis: chat model, rubric, prompt, redaction, long-call threshold
    (the daemon's, and what `eval` measures); with `profile`, its rubric and prompt."""
    profile = profile or profiles.implicit(config)
    return OpenAIAnalyzer(
        client,
        config.openai.analysis_model,
        profiles.rubric(profile, config),
        load_prompt(profiles.prompt_file(profile, config)),
        account_zone(config),
        limit=limit,
        topics=profiles.topics(profile, config),
        redact=config.analysis.redact,
        max_transcript_chars=config.analysis.max_transcript_chars,
        endpoint=config.openai.chat,
    )


def build_transcriber(config: Config, client: openai.OpenAI, limit: RequestLimit | None) -> OpenAITranscriber:
    """Speech-to-text as the config says, on `client` (the speech server's)."""
    return OpenAITranscriber(
        client.with_options(timeout=TRANSCRIBE_TIMEOUT),
        config.openai.transcription_model,
        config.openai.language,
        diarize_model=config.openai.diarize_model,
        prompt=config.openai.vocabulary_prompt,
        upload_format=config.audio.upload_format,
        bitrate=config.audio.bitrate_kbps * 1000,
        overlap_seconds=config.audio.chunk_overlap_seconds,
        limit=limit,
        max_seconds=config.poller.max_call_minutes * 60,
        # With a daily budget, each upload is checked against it: 20 minutes at most, so
        # the budget stops a call within ~$0.12 (whisper's price) instead of hours of audio.
        max_chunk_seconds=BUDGET_CHUNK_SECONDS if config.openai.daily_budget_usd > 0 else None,
        endpoint=config.openai.transcription,
    )


def build_app(
    config: Config,
    clock: Callable[[], datetime],
    store: Store | None = None,
    dry_run: Callable[[str], None] | None = None,
) -> App:
    """The app; with `dry_run`, messages and amoCRM writes go to that printer instead.

    The config's secrets join the process's registry (logs and stored error texts are
    redacted with it), and `storage.audio_dir` is made private (0700) before anything is
    downloaded into it.
    """
    add_secrets(config.secrets())
    store = store or Store.open(config.storage.database, int(clock().timestamp()))
    try:
        private_dir(config.storage.audio_dir)
    except OSError as exc:  # as before: each download then fails (and is retried) with the reason
        log.warning("cannot create %s: %s", config.storage.audio_dir, exc.strerror)
    # Speech-to-text and chat may be two servers (`openai.transcription_base_url`, `chat_base_url`).
    speech_client = build_openai(config, config.openai.transcription)
    chat_client = build_openai(config, config.openai.chat)
    tz = account_zone(config)
    stopping = threading.Event()  # set by the daemon's signal: retry waits end at once
    amo = build_amo(config, store, clock, stopping)
    # One per process: every worker, both channels of a call, every chunk and every analysis
    # request share these slots (`openai.max_concurrent_requests`, default two per worker: a stereo call's channels).
    limit = RequestLimit(config.openai_concurrency)
    return App(
        config=config,
        store=store,
        source=amo,
        recordings=RecordingDownloader(
            recording_session(USER_AGENT, allow_private=config.storage.allow_private_recording_hosts),
            config.storage.audio_dir,
            deadline_seconds=config.storage.download_deadline_seconds,
            max_bytes=config.storage.max_recording_mb * 2**20,
        ),
        transcriber=build_transcriber(config, speech_client, limit),
        analyzer=build_analyzer(config, chat_client, limit),
        profile_analyzers={
            profile.name: build_analyzer(config, chat_client, limit, profile)
            for profile in config.profiles
            if profile.rubric or profile.prompt_file or profile.topics is not None
        },
        notifier=build_notifier(config),
        tz=tz,
        crm=amo,
        dry_run=DryRun(dry_run) if dry_run else None,
        objections=OpenAIObjectionGrouper(
            chat_client, config.openai.analysis_model, limit=limit, endpoint=config.openai.chat
        ),
        updates=build_updates(config),
        stopping=stopping,
    )
