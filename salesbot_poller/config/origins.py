"""Where each configuration value came from, for error messages and `check --show-config`.

Contract:
- A value's path is a tuple of keys and 0-based positions, as pydantic's error locations
  are: ("telegram", "chat_id"), ("profiles", 1, "users", 0), ("analysis", "rubric", 2, "id").
- `toml_lines(text)` maps the path of every `key =` line and table header of a TOML text to
  its line number (from 1). tomllib gives no positions, so this is a small scan of the text:
  `[table]`, `[[array.of.tables]]` (counted per array), dotted and quoted keys; the lines
  inside a multi-line string are skipped. A line it cannot place is simply not mapped.
- `Origins` holds the source of each value ("config.toml line 12",
  "SALESBOT_TELEGRAM_CHAT_ID", "$CREDENTIALS_DIRECTORY/telegram_bot_token", "/path: key_file,
  config.toml line 7"); `of(path)` is the source of the longest prefix of `path` known, None
  when the value is a default. A key set again from the environment or a credential
  (`override`) forgets what the file said below it.
- `shown(path)` writes a path as the admin reads it: positions counted from 1,
  `profiles[2].users[1]`, `analysis.rubric[3].id`.
"""

from __future__ import annotations

import re
from pathlib import Path

PathKey = tuple[str | int, ...]

_BARE = r"[A-Za-z0-9_-]+"
_KEY = rf'(?:{_BARE}|"[^"]*"|\'[^\']*\')'
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_ARRAY_HEADER = re.compile(rf"^\s*\[\[\s*({_DOTTED})\s*\]\]")
_HEADER = re.compile(rf"^\s*\[\s*({_DOTTED})\s*\]")
_ASSIGN = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART = re.compile(_KEY)


def _parts(dotted: str) -> tuple[str, ...]:
    return tuple(part.strip("\"'") for part in _PART.findall(dotted))


def toml_lines(text: str) -> dict[PathKey, int]:
    """See the module contract."""
    found: dict[PathKey, int] = {}
    counts: dict[tuple[str, ...], int] = {}
    table: PathKey = ()
    in_string: str | None = None  # the delimiter of the multi-line string being read
    for number, line in enumerate(text.splitlines(), 1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        if match := _ARRAY_HEADER.match(line):
            names = _parts(match.group(1))
            counts[names] = counts.get(names, -1) + 1
            # A nested array ([[profiles.rubric]]) counts within the last element of its parent.
            table = _array_path(names, counts)
            found.setdefault(table, number)
        elif match := _HEADER.match(line):
            table = _array_path(_parts(match.group(1)), counts, last_is_table=True)
            found.setdefault(table, number)
        elif match := _ASSIGN.match(line):
            found.setdefault((*table, *_parts(match.group(1))), number)
            rest = line[match.end() :]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_string = quote
    return found


def _array_path(names: tuple[str, ...], counts: dict[tuple[str, ...], int], last_is_table: bool = False) -> PathKey:
    path: list[str | int] = []
    for end in range(1, len(names) + 1):
        path.append(names[end - 1])
        prefix = names[:end]
        if prefix in counts and not (last_is_table and end == len(names)):
            path.append(counts[prefix])
    return tuple(path)


def shown(path: PathKey) -> str:
    """See the module contract."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part + 1}]"
        else:
            text += f".{part}" if text else str(part)
    return text


class Origins:
    """See the module contract."""

    def __init__(self) -> None:
        self._sources: dict[PathKey, str] = {}

    def from_toml(self, path: Path | str, text: str) -> None:
        for key, number in toml_lines(text).items():
            self._sources[key] = f"{path} line {number}"

    def line_of(self, path: PathKey) -> str | None:
        """The source the file gives `path` itself (not a prefix), if any."""
        return self._sources.get(path)

    def override(self, section: str, key: str, source: str) -> None:
        """`section.key` now comes from `source`; what the file said below it is forgotten."""
        for known in [p for p in self._sources if p[:2] == (section, key)]:
            del self._sources[known]
        self._sources[(section, key)] = source

    def of(self, path: PathKey) -> str | None:
        """See the module contract."""
        # A key the file does not set is not placed at its table's header.
        for end in range(len(path), min(len(path), 2) - 1, -1):
            source = self._sources.get(path[:end])
            if source is not None:
                return source
        return None
