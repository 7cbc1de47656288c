"""Real-world response shapes kept in tests/data/*.json: each file maps a sample's name to the
sample, whose `_source` says where its shape comes from (left out of what a test gets)."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"


@cache
def _file(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return data


def names(file: str) -> list[str]:
    """The samples of `file`, in file order."""
    return [key for key in _file(file) if not key.startswith("_")]


def sample(file: str, name: str) -> Any:
    """A fresh copy of sample `name` of `file`, without its `_source`."""
    value = copy.deepcopy(_file(file)[name])
    if isinstance(value, dict):
        value.pop("_source", None)
    return value
