"""The hostile values (tests/data/hostile.json), for any test that wants them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data" / "hostile.json"


@cache
def values() -> dict[str, Any]:
    """The file's values; `long_text` is built from its unit and length."""
    data: dict[str, Any] = json.loads(DATA.read_text(encoding="utf-8"))
    unit = data["long_text_unit"]
    data["long_text"] = (unit * (data["long_text_chars"] // len(unit) + 1))[: data["long_text_chars"]]
    return data


def nested(depth: int | None = None) -> str:
    """A JSON text nested `depth` arrays deep (a page a parser must not choke on)."""
    depth = depth or values()["nesting_depth"]
    return "[" * depth + "]" * depth
