"""What every part of `Store` shares: the database, the redaction of error texts, and the
small key/value state (the events cursor, the last cycle's summary, the OAuth tokens).

Contract:
- `StoreBase` is the root of `Store`'s mixins (`store.core` assembles them): it declares
  `db` and the store's `redact`, which `Store.__init__` sets.
- `_redacted(fields)` passes the error texts among `fields` (`ERROR_FIELDS`) through
  `redact` before they are written.
- `set_state` stores a value redacted of every known secret; only `set_secret_state` stores
  it as given (the OAuth tokens). Either is an upsert on the key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import peewee

from salesbot_poller.store.models import State

CURSOR_KEY = "events_cursor"
ERROR_FIELDS = ("last_error", "skip_reason", "error")  # texts that may quote an upstream answer


class StoreBase:
    """The database and the redactor every mixin of `Store` uses (set by `Store.__init__`)."""

    db: peewee.Database
    _redact: Callable[[str], str]

    def _redacted(self, fields: dict[str, Any]) -> dict[str, Any]:
        return {
            key: self._redact(value) if key in ERROR_FIELDS and isinstance(value, str) else value
            for key, value in fields.items()
        }

    # --- small state ---------------------------------------------------------------

    def get_state(self, key: str) -> str | None:
        row = State.get_or_none(State.key == key)
        return None if row is None else str(row.value)

    def set_state(self, key: str, value: str) -> None:
        """Store `value` under `key`, redacted of every known secret (a summary may quote an
        error: the last cycle's)."""
        self.set_secret_state(key, self._redact(value))

    def set_secret_state(self, key: str, value: str) -> None:
        """Store `value` as given: only for state that must hold a secret (OAuth tokens)."""
        # An upsert on the key (INSERT OR REPLACE is SQLite's own: PostgreSQL refuses it).
        State.insert(key=key, value=value).on_conflict(
            conflict_target=[State.key], update={State.value: value}
        ).execute()

    def cursor(self) -> int | None:
        value = self.get_state(CURSOR_KEY)
        return None if value is None else int(value)
