"""Map `openai` SDK exceptions to the project's error classes, with texts safe to log.

Contract:
- `map_openai_error(exc, what, model, endpoint, model_setting)`: transient (timeouts,
  connection, 429, 5xx) or permanent/fatal (a refused key, a missing model, a wrong URL), the
  text naming the setting actually in use: `endpoint.url_setting` for the URL (e.g.
  `openai.transcription_base_url` when that one is set, else `openai.base_url`),
  `endpoint.key_setting` for the key, `model_setting` for the model.
- A 404 from a server whose base URL does not end in `/v1` says so and what to set, since
  most OpenAI-compatible servers serve `/v1/...`; OpenAI's own `model_not_found` stays a
  missing model.
- The SDK's own messages are not reused for auth errors: some servers echo part of the key.
  URLs are shown without credentials or query (`Endpoint.shown_url`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import openai
from pydantic import SecretStr

from salesbot_poller.config import Endpoint
from salesbot_poller.errors import FatalError, PermanentError, SalesbotError, TransientError
from salesbot_poller.logs import excerpt

# Where the error came from when the caller did not say: the shared settings.
DEFAULT_ENDPOINT = Endpoint("", SecretStr(""))


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after")
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _request_url(exc: openai.APIStatusError) -> str:
    """The URL the request went to, without credentials or query."""
    url = urlsplit(str(exc.request.url))
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.hostname or '?'}{port}{url.path}"


def lacks_v1(endpoint: Endpoint) -> bool:
    """Whether the base URL's path does not end in `/v1`, where most servers serve the API."""
    return bool(endpoint.base_url) and not urlsplit(endpoint.base_url).path.rstrip("/").endswith("/v1")


def wrong_path(exc: openai.APIStatusError, endpoint: Endpoint) -> FatalError:
    """A 404 at a base URL without `/v1`: what to set instead."""
    suggested = f"{endpoint.shown_url}/v1"
    return FatalError(
        f"the server answered 404 at {_request_url(exc)}; most servers serve /v1/… — "
        f'set {endpoint.url_setting} = "{suggested}"'
    )


def map_openai_error(
    exc: openai.OpenAIError,
    what: str,
    model: str,
    endpoint: Endpoint | None = None,
    model_setting: str = "",
) -> SalesbotError:
    """What the pipeline should do about `exc`, raised while doing `what` with `model` on
    `endpoint` (`model` named by `model_setting`, e.g. "openai.analysis_model")."""
    where = endpoint or DEFAULT_ENDPOINT
    host = f" at {where.host}" if where.base_url else ""
    if isinstance(exc, openai.APITimeoutError):
        return TransientError(f"OpenAI {what}: timed out{host}")
    if isinstance(exc, openai.APIConnectionError):
        return TransientError(f"OpenAI {what}: cannot connect{host} (check {where.url_setting} and the network)")
    if isinstance(exc, openai.AuthenticationError):
        if not where.api_key.get_secret_value() and where.base_url:
            return FatalError(f"OpenAI {what}: the server{host} wants a key (HTTP 401): set {where.key_setting}")
        return FatalError(
            f"OpenAI {what}: the server{host} rejected the key (HTTP 401): set a valid {where.key_setting}"
        )
    if isinstance(exc, openai.PermissionDeniedError):
        return FatalError(
            f"OpenAI refused access (HTTP 403) for {what}: "
            f"check the project and region of the key in {where.key_setting}"
        )
    if isinstance(exc, openai.NotFoundError):
        if exc.code != "model_not_found" and lacks_v1(where):
            return wrong_path(exc, where)
        named = model_setting or "the model name in [openai]"
        return FatalError(f"OpenAI {what}: model {model!r} not found{host} (HTTP 404): check {named}")
    if isinstance(exc, openai.RateLimitError):
        if exc.code == "insufficient_quota":
            return TransientError(f"OpenAI {what}: quota exhausted (insufficient_quota): top up the account")
        return TransientError(f"OpenAI {what}: rate limited (HTTP 429)", retry_after=_retry_after(exc))
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500 or exc.status_code in (408, 409):
            return TransientError(f"OpenAI {what}: HTTP {exc.status_code}", retry_after=_retry_after(exc))
        detail = exc.message if isinstance(exc.message, str) else ""
        return PermanentError(f"OpenAI {what}: HTTP {exc.status_code}: {excerpt(detail)}")
    if isinstance(exc, openai.APIResponseValidationError):
        return TransientError(f"OpenAI {what}: malformed answer")
    return TransientError(f"OpenAI {what}: {type(exc).__name__}")
