"""What every configuration section shares: the section base class and the checks of
single values.

Contract:
- Every section is a `_Section`: frozen, and an unknown key is an error (`extra="forbid"`).
- `HttpUrl` is an http(s) URL without its trailing slash; an empty one passes here, and
  whether a key is required is decided when the config is loaded (`config.load`), so every
  problem is reported at once.
- Chat ids are kept as text (`_chat_id_text`, `_id_list`); a list may come from the
  environment as "a,b" (`_comma_list`).
- A file setting is "" or the path of a file that exists (`existing_file`); whether it is a
  regular file, and small enough, is checked where it is read (`config.files`).
- A `Secret` is a `SecretStr` pasted by hand: spaces and line breaks around it are dropped
  (a file's final newline, a stray space), one inside it, or a character that is not plain
  printable ASCII, is an error saying where (its position, never the value).
- A `ChatId` that is a group's id with its minus forgotten (`1001234567890`) is an error
  giving the fix (`-1001234567890`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, SecretStr

from salesbot_poller.config.files import read_text


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str) -> str:
    value = value.strip().rstrip("/")
    if value and (not value.startswith(("http://", "https://")) or not value.split("://", 1)[1]):
        raise ValueError("must be an http:// or https:// URL")
    return value


# An empty value passes here; whether the key is required is decided in `_missing_values`.
HttpUrl = Annotated[str, AfterValidator(_http_url)]


def _chat_id_text(value: Any) -> Any:
    # `chat_id = -1001234567890` (a TOML integer) is as natural as the quoted form.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _strip_secret(value: Any) -> Any:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value.strip() if isinstance(value, str) else value


def _one_line(value: SecretStr) -> SecretStr:
    secret = value.get_secret_value()
    for position, char in enumerate(secret, 1):
        where = f"(at character {position} of {len(secret)})"
        if char in "\r\n":
            raise ValueError(f"has a line break inside {where}: paste it again as one line")
        if char.isspace():
            raise ValueError(f"has a space inside {where}: paste it again as one line")
        if not (char.isascii() and char.isprintable()):
            raise ValueError(
                f"has a character that is not plain ASCII {where}, a look-alike letter or an invisible one "
                "from the copy: paste it again from its source"
            )
    return value


# A secret as pasted: see the module contract.
Secret = Annotated[SecretStr, BeforeValidator(_strip_secret), AfterValidator(_one_line)]


def _group_id_hint(value: str) -> str:
    # 13 digits starting 100 is a supergroup's or channel's id without its minus: no user,
    # group or bot has such an id.
    if len(value) == 13 and value.startswith("100") and value.isdigit():
        raise ValueError(f"group and channel ids start with -100; did you mean -{value}?")
    return value


def _comma_list(value: Any) -> Any:
    # The environment gives a string: SALESBOT_ANALYSIS_REDACT="phone,email" ("" = none).
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# A chat id as text (a TOML integer is as natural as the quoted form).
ChatId = Annotated[str, BeforeValidator(_chat_id_text), AfterValidator(_group_id_hint)]


def _id_list(value: Any) -> Any:
    # Chat ids as TOML integers or strings, or "a,b" from the environment: kept as text.
    value = _comma_list(value)
    if isinstance(value, list):
        return [_chat_id_text(item) for item in value]
    return value


ReadFile = Callable[[str, int], str]
"""How the config's files are read: `read(path, limit)` returns the text of `path` (at most
`limit` bytes), or raises an `OSError` whose `strerror` says why not, or `FileRejected`. The
default is `config.files.read_text`; the `fleet` commands pass `cli.fleet_files.read_capped`,
which also follows no symlink of another user."""


def context_reader(context: Any) -> ReadFile:
    """The `ReadFile` passed in a validation's context (`{"read_file": ...}`), else `read_text`."""
    reader = context.get("read_file") if isinstance(context, dict) else None
    return reader if callable(reader) else read_text


def existing_file(value: str) -> str:
    """A file setting: "" (none) or the path of a file that exists (a FIFO or a device is
    refused where it is read, by `config.files.read_text`, and said to be one)."""
    if value and not Path(value).exists():
        raise ValueError(f"{value}: no such file")
    return value
