"""The secrets in a configuration: found for the log redactor, hidden when printed.

Contract:
- `_secret_values(value)` walks a model (nested models, mappings and sequences included)
  and returns every non-empty `SecretStr` value: `Config.secrets()` is built on it.
- `database_passwords(url)` returns the passwords in a database URL, as written and
  percent-decoded; a malformed URL gives none.
- `safe_url(url)` is `url` with its password replaced by `***`: every place that shows
  `storage.database` shows it through this.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr


def database_passwords(url: str) -> list[str]:
    """The passwords in a database URL: `user:PASSWORD@` and a `password=` query parameter,
    each as written and percent-decoded (the driver, and so its errors, see the decoded one)."""
    try:
        parts = urlsplit(url)
        query = [pair.partition("=") for pair in parts.query.split("&")]
        written = [parts.password or "", *(value for key, _, value in query if unquote(key) == "password")]
    except ValueError:  # a malformed URL: no password is read out of it
        return []
    found: list[str] = []
    for value in written:
        for form in (value, unquote(value)):
            if form and form not in found:
                found.append(form)
    return found


def safe_url(url: str) -> str:
    """`url` with its password replaced by `***`, for printing: every place that shows
    `storage.database` shows it through this."""
    if not database_passwords(url):
        return url
    scheme, _, rest = url.partition("://")
    location, query_mark, query = rest.partition("?")
    userinfo, at, host = location.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if colon and password:
        location = f"{user}:***{at}{host}"
    query = re.sub(r"(^|&)password=[^&]*", r"\1password=***", query)
    return f"{scheme}://{location}{query_mark}{query}"


def _secret_values(value: Any) -> list[str]:
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        return [secret] if secret else []
    if isinstance(value, BaseModel):
        children: list[Any] = [getattr(value, name) for name in type(value).model_fields]
    elif isinstance(value, Mapping):
        children = list(value.values())
    elif isinstance(value, list | tuple):
        children = list(value)
    else:
        return []
    return [secret for child in children for secret in _secret_values(child)]
