"""`check --show-config`: the merged configuration, every value with where it came from.

Contract:
- One line per key, section by section as in config.toml, then each `[[profiles]]`:
  `key = VALUE  # SOURCE`, SOURCE being the file's line, the variable, the `_file` path, the
  credential (`config.origins`), or `default`.
- No secret is printed: a set `SecretStr` is `"***"`, `storage.database` has its password
  hidden (`safe_url`), and every line goes through the config's redactor as well.
- Nothing is checked, opened or written: the services and the database are left alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from salesbot_poller.cli.common import Out
from salesbot_poller.config import Config, Origins, RubricItem, safe_url, sections
from salesbot_poller.config.origins import PathKey


def _value(path: PathKey, value: Any) -> str:
    if isinstance(value, SecretStr):
        return '"***"' if value.get_secret_value() else '""'
    if path == ("storage", "database"):
        return json.dumps(safe_url(value))
    if isinstance(value, tuple) and value and all(isinstance(item, RubricItem) for item in value):
        return json.dumps([item.id for item in value], ensure_ascii=False)  # the ids: the items are long
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, dict):
        value = {str(k): v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in value.items()}
    elif isinstance(value, Path):
        value = str(value)
    elif isinstance(value, tuple | list):
        value = [item.model_dump(mode="json") if isinstance(item, BaseModel) else item for item in value]
    return json.dumps(value, ensure_ascii=False)


def _table(model: BaseModel, path: PathKey, origins: Origins, out: Out) -> None:
    for name in type(model).model_fields:
        key = (*path, name)
        out(f"{name} = {_value(key, getattr(model, name))}  # {origins.line_of(key) or 'default'}")


def show_config(config: Config, origins: Origins, config_file: Path, out: Out) -> None:
    """See the module contract."""
    out(f"# the config of {config_file} with the environment and credentials: each value and its source")
    for section in sections():
        out(f"[{section}]")
        _table(getattr(config, section), (section,), origins, out)
    for index, profile in enumerate(config.profiles):
        out(f"[[profiles]]  # profiles[{index + 1}]")
        _table(profile, ("profiles", index), origins, out)
