"""docs/architecture.md's import table holds: each room of the package imports only the rooms
its row allows. The table is read from the page itself, so changing a rule means changing
the page a newcomer reads."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "salesbot_poller"
PAGE = ROOT / "docs" / "architecture.md"


def room_name(cell: str) -> str:
    """`cli/`, `app.py` -> cli, app."""
    return cell.strip().strip("`").removesuffix("/").removesuffix(".py")


def allowed_imports() -> dict[str, set[str]]:
    """The page's table: room -> the rooms it may import."""
    text = PAGE.read_text(encoding="utf-8")
    section = text.split("## Rooms and what each may import", 1)[1].split("\n## ", 1)[0]
    rules: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        rules[room_name(cells[0])] = {room_name(name) for name in re.findall(r"`[^`]+`", cells[2])}
    return rules


def room_of(path: Path) -> str | None:
    """The room a module of the package belongs to (None for the package's own __init__)."""
    parts = path.relative_to(PACKAGE).parts
    if parts == ("__init__.py",):
        return None
    return room_name(parts[0])


def imported_rooms(path: Path, rooms: set[str]) -> set[str]:
    """The rooms of the package that `path` imports, anywhere in it (functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "salesbot_poller" and len(parts) > 1 and parts[1] in rooms:
                found.add(parts[1])
    return found


def test_the_page_names_every_room_of_the_package() -> None:
    rules = allowed_imports()
    rooms = {room_of(path) for path in PACKAGE.glob("*") if path.suffix == ".py" or path.is_dir()}
    rooms -= {None, "__pycache__"}
    assert rooms - set(rules) == set(), "rooms the page does not describe"
    assert set(rules) - rooms == set(), "the page describes rooms that are gone"


def test_no_room_imports_what_the_page_forbids() -> None:
    rules = allowed_imports()
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        room = room_of(path)
        if room is None:
            continue
        for target in sorted(imported_rooms(path, set(rules)) - rules[room] - {room}):
            wrong.append(f"{path.relative_to(ROOT)} imports {target} ({room} may import: {sorted(rules[room])})")
    assert wrong == []


def test_the_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    """The check can fail: a pipeline module importing a report is found."""
    module = tmp_path / "sample.py"
    module.write_text(
        "def f():\n    from salesbot_poller.reports import digest\n    from salesbot_poller import lanes\n"
    )
    rules = allowed_imports()
    assert imported_rooms(module, set(rules)) - rules["pipeline"] == {"reports", "lanes"}
