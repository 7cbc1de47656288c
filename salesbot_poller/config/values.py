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
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict

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


def _comma_list(value: Any) -> Any:
    # The environment gives a string: SALESBOT_ANALYSIS_REDACT="phone,email" ("" = none).
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


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
