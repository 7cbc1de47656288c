"""What every part of `Store` shares: the database, the redaction of error texts, and the
small key/value state (the events cursor, the last cycle's summary, the OAuth tokens).

Contract:
- `StoreBase` is the root of `Store`'s mixins (`store.core` assembles them): it declares
  `db` and the store's `redact`, which `Store.__init__` sets.
- `_redacted(fields)` passes the error texts among `fields` (`ERROR_FIELDS`) through
  `redact` before they are written.
- `set_state` stores a value redacted of every known secret; only `set_secret_state` stores
  it as given (the OAuth tokens). Either is an upsert on the key.
- `insert_rows(db, model, rows)` inserts many rows per statement with one SQL text per
  chunk, values converted by each field as peewee would (`Store.insert_calls_bulk`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import peewee

from salesbot_poller.store.models import State

CURSOR_KEY = "events_cursor"
BULK_VARIABLES = 16_000  # bound variables per statement: under SQLite's 32,766 and PostgreSQL's 65,535
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


def insert_rows(db: peewee.Database, model: type[peewee.Model], rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT `rows` (field name -> value, every row the same names) into `model`'s table,
    as many rows per statement as `BULK_VARIABLES` allows. The SQL text is written once per
    chunk, not built value by value as `insert_many` does: 1M rows take seconds, not minutes."""
    if not rows:
        return
    given = [model._meta.fields[name] for name in rows[0]]
    # The fields not given that have a default: peewee's own inserts fill them in Python.
    defaults = [f for f in model._meta.sorted_fields if f.name not in rows[0] and f.default is not None]
    fields = given + defaults
    columns = ", ".join(f'"{field.column_name}"' for field in fields)
    group = "(" + ", ".join([db.param] * len(fields)) + ")"
    size = max(1, BULK_VARIABLES // len(fields))
    for start in range(0, len(rows), size):
        part = rows[start : start + size]
        sql = f'INSERT INTO "{model._meta.table_name}" ({columns}) VALUES ' + ", ".join([group] * len(part))
        fixed = [field.default() if callable(field.default) else field.default for field in defaults]
        values = [value for row in part for value in [*(row[f.name] for f in given), *fixed]]
        converted = [field.db_value(value) for value, field in zip(values, fields * len(part), strict=True)]
        db.execute_sql(sql, converted)  # type: ignore[no-untyped-call]
