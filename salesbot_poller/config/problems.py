"""A validation error as the admin reads it: one line naming the key (positions from 1), what
to fix, and where the value came from.

Contract:
- `describe(error, origins)` is one line for one pydantic error: `shown(loc)`, the message
  (never pydantic's `input`, which may be a secret), then `(from SOURCE)` when the value was
  set somewhere (`config.origins`).
- An unknown key gets "did you mean KEY?" from the keys its table knows (difflib), or "it is
  a key of [SECTION]" when another section has it.
- A `telegram.admins` entry that is not a number says how to learn a Telegram user id.
"""

from __future__ import annotations

import difflib
import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from salesbot_poller.config.model import Config, sections
from salesbot_poller.config.origins import Origins, PathKey, shown

ADMIN_HINT = (
    "must be a numeric Telegram user id, e.g. 123456789, not a name: send /start to @userinfobot to learn "
    "yours; or, once command_chats and an admin are set, each command from someone else is logged with their "
    'id ("ignored: the user is not in telegram.admins")'
)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds: itself, or that of its list, tuple, dict values, Optional."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (list, tuple, dict, Union, types.UnionType):
        args = get_args(annotation)
        for arg in args[1:] if get_origin(annotation) is dict else args:
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _table_of(loc: PathKey) -> type[BaseModel] | None:
    """The model whose key `loc[-1]` is: walked from `Config` along the keys, positions skipped."""
    current: type[BaseModel] | None = Config
    for part in loc[:-1]:
        if current is not None and isinstance(part, str) and part in current.model_fields:
            current = _model_in(current.model_fields[part].annotation)
    return current


def _unknown_key_hint(loc: PathKey) -> str:
    key = str(loc[-1])
    table = _table_of(loc)
    if table is None:
        return ""
    known = list(table.model_fields)
    if len(loc) == 2 and loc[0] in sections():  # `<key>_file` reads a key of a section from a file
        known += [f"{name}_file" for name in table.model_fields]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
    if close:
        return f"; did you mean {close[0]}?"
    if len(loc) == 2:
        owners = [name for name, model in sections().items() if key in model.model_fields and name != loc[0]]
        if owners:
            return f"; it is a key of [{owners[0]}]"
    return ""


def describe(error: Any, origins: Origins | None = None) -> str:
    """See the module contract."""
    loc: PathKey = tuple(part for part in error["loc"] if isinstance(part, int | str))
    if error["type"] == "extra_forbidden":
        message = "unknown key" + _unknown_key_hint(loc)
    elif loc[:2] == ("telegram", "admins") and error["type"] in ("int_parsing", "int_type", "int_from_float"):
        message = ADMIN_HINT
    else:
        # The message only: pydantic's `input` may be a secret and is never shown.
        message = str(error["msg"]).removeprefix("Value error, ")
    source = origins.of(loc) if origins is not None else None
    if not loc:  # a rule across keys: its message names them
        return message
    return f"{shown(loc)}: {message}" + (f" (from {source})" if source else "")
