"""Map `openai` SDK exceptions to the project's error classes, with texts safe to log.

The SDK's own messages are not reused for auth errors: some servers echo part of the key.
"""

from __future__ import annotations

import openai

from salesbot_poller.errors import FatalError, PermanentError, SalesbotError, TransientError
from salesbot_poller.logs import excerpt


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after")
    try:
        return float(value) if value else None
    except ValueError:
        return None


def map_openai_error(exc: openai.OpenAIError, what: str, model: str) -> SalesbotError:
    """What the pipeline should do about `exc`, raised while doing `what` with `model`."""
    if isinstance(exc, openai.APITimeoutError):
        return TransientError(f"OpenAI {what}: timed out")
    if isinstance(exc, openai.APIConnectionError):
        return TransientError(f"OpenAI {what}: cannot connect (check openai.base_url and the network)")
    if isinstance(exc, openai.AuthenticationError):
        return FatalError("OpenAI rejected the API key (HTTP 401): set a valid openai.api_key")
    if isinstance(exc, openai.PermissionDeniedError):
        return FatalError(f"OpenAI refused access (HTTP 403) for {what}: check the key's project and region")
    if isinstance(exc, openai.NotFoundError):
        return FatalError(f"OpenAI {what}: model {model!r} not found (HTTP 404): check the model name in [openai]")
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
