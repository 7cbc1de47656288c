"""Project exceptions. Every failure of an external service becomes one of these.

The class says what the pipeline does with it:
- `TransientError`: this call is retried on a later cycle (429, 5xx, timeouts, recording
  not ready yet). `retry_after` carries a server's requested wait, when it gave one.
- `PermanentError`: this call can never succeed as it is; it is marked failed.
- `BudgetReached`: the daily OpenAI budget has no room for the next upload; the call waits
  for the next UTC day without counting an attempt.
- `FatalError`: nothing can succeed until a human acts (bad token, unpaid account, unknown
  chat); the cycle stops without touching any call, and `once` exits non-zero.

Messages are written for the admin reading journalctl: they say what is wrong and, where
we know it, what to do. They never contain a secret.
"""

from __future__ import annotations


class SalesbotError(Exception):
    """Base class of the project's errors."""


class TransientError(SalesbotError):
    """Worth retrying later; `retry_after` is the server's requested wait in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Busy(TransientError):
    """Not now, through no fault of the call (a chat's send rate, a chat paused by a 429):
    the call is put off by `retry_after` seconds without counting a failed attempt."""


class Unreadable(TransientError):
    """An answer that cannot be read at all (JSON nested past any parser's depth): asking again
    at once gets the same answer, so it is not retried within the cycle; a later one tries."""


class BudgetReached(SalesbotError):
    """The next upload would cross `openai.daily_budget_usd`: the call waits (not an attempt,
    not a failure) until `resume_at` (Unix time, the next UTC day); what was already
    transcribed is kept and never paid again."""

    def __init__(self, message: str, resume_at: int) -> None:
        super().__init__(message)
        self.resume_at = resume_at


class PermanentError(SalesbotError):
    """This call cannot succeed; retrying it would only repeat the failure."""


class VoiceForbidden(PermanentError):
    """The chat takes no voice messages (Telegram's 400 VOICE_MESSAGES_FORBIDDEN, a person's
    privacy setting): the clip goes as an audio file instead."""


class FatalError(SalesbotError):
    """A service refuses us as a whole (credentials, account, chat): a human must act."""


class ConfigError(SalesbotError):
    """The configuration is invalid; `problems` lists every problem, each naming its key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
