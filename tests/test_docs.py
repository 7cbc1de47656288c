"""The README and every guide in docs/ name only things that exist.

Each page is read for: `salesbot-poller COMMAND [--option]` (checked against the real argparse
parser of `cli/main.py`, the wrapper's `--instance NAME` allowed first), config keys written
`section.key` or `profiles[N].key` (against the config model; `<key>_file` is every key's file
form) and the keys of every ```toml block, `SALESBOT_*` variables (those the loader reads, plus
the tests' own), and relative links and repository files written as code (`tests/test_chaos.py`: the file must
exist). The README must link every guide and
give the test command `.ci/run` runs.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from salesbot_poller.cli.main import _parser
from salesbot_poller.config import ENV_PREFIX, Profile, RubricItem, TrackerConfig, sections
from tests import databases

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
# Pages that predate the guides and keep their own opening (no purpose line, no link back).
OWN_OPENING = {"architecture.md", "demo-session.md"}

SECTIONS: dict[str, type[BaseModel]] = {**sections(), "profiles": Profile, "trackers": TrackerConfig}
ENV_READ = {"SALESBOT_CONFIG", databases.ENV} | {
    f"{ENV_PREFIX}{section.upper()}_{key.upper()}{suffix}"
    for section, model in sections().items()
    for key in model.model_fields
    for suffix in ("", "_FILE")
}
KEY = re.compile(r"(?<![\w./:-])(" + "|".join(SECTIONS) + r")(?:\[\w+\])?\.([a-z_][a-z0-9_]*)")
ENV = re.compile(r"\bSALESBOT_[A-Z0-9_]*[A-Z0-9]\b")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
COMMAND = re.compile(r"(?<![\w/.-])salesbot-poller(?=\s)([^`]*)")
INLINE = re.compile(r"`([^`\n]+)`")
# A file of this repository written as code: `tests/test_chaos.py`, `config/model.py`, `eval/README.md`.
REPO_PATH = re.compile(r"^(?:\.venv/bin/python )?([a-z_.][\w.-]*/[\w./-]*\.(?:py|md|sh|toml|jsonl|service))\b")


def fenced(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(the lines outside ``` blocks, [(language, body)] of the blocks)."""
    prose: list[str] = []
    blocks: list[tuple[str, str]] = []
    language: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        if line.startswith("```"):
            if language is None:
                language, body = line[3:].strip(), []
            else:
                blocks.append((language, "\n".join(body)))
                language = None
        elif language is None:
            prose.append(line)
        else:
            body.append(line)
    return prose, blocks


def code(text: str) -> list[str]:
    """Everything written as code: inline `spans` and each line of a ``` block (its `#` comment cut)."""
    prose, blocks = fenced(text)
    spans = [span for line in prose for span in INLINE.findall(line)]
    return spans + [line.split(" #", 1)[0] for _, body in blocks for line in body.splitlines()]


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return None


def _options(parser: argparse.ArgumentParser) -> dict[str, bool]:
    """--option -> whether it takes a value."""
    return {name: action.nargs != 0 for action in parser._actions for name in action.option_strings}


def command_problems(line: str, top: argparse.ArgumentParser) -> list[str]:
    """What in one `salesbot-poller ...` line the command line would refuse: command, subcommand, options."""
    tokens = [t.strip("[]()") for t in re.split(r"\s+", line.strip())]
    tokens = [t for t in tokens if t and not t.startswith("'")]
    cut = next((i for i, t in enumerate(tokens) if t in {"|", "&&", ";", ">", "2>&1", "/"}), len(tokens))
    tokens = tokens[:cut]
    i, options = 0, _options(top)
    while i < len(tokens) and tokens[i].startswith("-"):
        name = tokens[i].split("=", 1)[0]
        if name == "--instance":  # the installed wrapper's, before the CLI's own
            i += 2
            continue
        if name not in options:
            return [f"unknown global option {name}"]
        i += 2 if options[name] and "=" not in tokens[i] else 1
    if i == len(tokens):
        return []
    commands = _commands(top) or {}
    label = tokens[i]
    parser = commands.get(label)
    if parser is None:
        return [f"unknown command {label!r}"]
    i += 1
    subcommands = _commands(parser)
    if subcommands is not None and i < len(tokens):
        if tokens[i] not in subcommands:
            return [f"unknown subcommand {tokens[i]!r} of {tokens[i - 1]}"]
        parser = subcommands[tokens[i]]
        label += " " + tokens[i]
        i += 1
    known = _options(parser)
    return [f"{label}: unknown option {t}" for t in tokens[i:] if _unknown(t, known)]


def _unknown(token: str, known: dict[str, bool]) -> bool:
    name = token.split("=", 1)[0].rstrip(",")
    return name.startswith("--") and len(name) > 2 and name not in known


def key_problems(section: str, key: str) -> list[str]:
    fields = SECTIONS[section].model_fields
    if key in fields or key.removesuffix("_file") in fields:
        return []
    return [f"unknown config key {section}.{key}"]


def toml_problems(body: str) -> list[str]:
    """The keys of a TOML example, each against its section's model (a fragment that is not TOML is left alone)."""
    try:
        document: dict[str, Any] = tomllib.loads(body)
    except tomllib.TOMLDecodeError:
        return []
    found: list[str] = []
    for section, table in document.items():
        if section not in SECTIONS:
            found.append(f"unknown config section [{section}]")
            continue
        for entry in table if isinstance(table, list) else [table]:
            for key, value in entry.items():
                found += key_problems(section, key)
                if key == "rubric" and isinstance(value, list):
                    keys = {k for item in value for k in item}
                    found += [f"unknown rubric key {k}" for k in sorted(keys - set(RubricItem.model_fields))]
    return found


def page_problems(path: Path, text: str) -> list[str]:
    """Everything on one page that names a command, key, variable or file that does not exist."""
    top = _parser()
    found: list[str] = []
    for span in code(text):
        for match in COMMAND.finditer(span):
            found += [f"`salesbot-poller{match.group(1)}`: {p}" for p in command_problems(match.group(1), top)]
    for span in INLINE.findall(text):
        named = REPO_PATH.match(span)
        if named and re.search(r"\b(NAME|DIR|FILE)\b", named.group(1)):  # a placeholder: `cli/NAME.py`
            continue
        bases = (ROOT, ROOT / "salesbot_poller", path.parent)
        if named and not any((base / named.group(1)).exists() for base in bases):
            found.append(f"{named.group(1)}: no such file in the repository")
    for section, key in KEY.findall(text):
        if key != "md":  # a page named like a section (trackers.md), not a key
            found += key_problems(section, key)
    for name in sorted(set(ENV.findall(text)) - ENV_READ):
        found.append(f"{name} is read by nothing")
    for language, body in fenced(text)[1]:
        if language == "toml":
            found += toml_problems(body)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (path.parent / target.split("#", 1)[0]).exists():
            found.append(f"link to {target}: no such file")
    return found


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_page_names_only_what_exists(path: Path) -> None:
    assert page_problems(path, path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", [p for p in PAGES if p.parent.name == "docs" and p.name not in OWN_OPENING], ids=str)
def test_guide_opens_with_its_purpose_and_a_link_back(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# ") and lines[1] == ""
    assert "](../README.md)" in lines[2], f"{path.name}: line 3 should say what the page is for and link the README"


def test_readme_links_every_guide() -> None:
    linked = set(LINK.findall(README.read_text(encoding="utf-8")))
    assert {f"docs/{p.name}" for p in PAGES if p.parent.name == "docs"} <= linked


def test_readme_gives_the_test_command_ci_runs() -> None:
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if " -m pytest" in line]
    assert len(ci) == 1, ci
    _, blocks = fenced(README.read_text(encoding="utf-8"))
    assert ci[0] in {line.strip() for _, body in blocks for line in body.splitlines()}


def test_the_checks_catch_what_does_not_exist(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Set `telegram.chat_idd` or SALESBOT_TELEGRAM_CHATID; see [the guide](nowhere.md).\n"
        "`salesbot-poller backfil --since 2026-11-01`, `salesbot-poller export --sinse 2026-11-01`,\n"
        "`salesbot-poller --instance acme fleet stats`, `salesbot-poller check --show-config`.\n"
        "`tests/test_chaos.py` and `benchmarks/nothing.py [--runs 3]`.\n"
        "```toml\n[poller]\nworkerz = 2\n[[profiles]]\nname = 'x'\npipeline = [1]\n```\n",
        encoding="utf-8",
    )
    assert page_problems(page, page.read_text(encoding="utf-8")) == [
        "`salesbot-poller backfil --since 2026-11-01`: unknown command 'backfil'",
        "`salesbot-poller export --sinse 2026-11-01`: export: unknown option --sinse",
        "`salesbot-poller --instance acme fleet stats`: unknown subcommand 'stats' of fleet",
        "benchmarks/nothing.py: no such file in the repository",
        "unknown config key telegram.chat_idd",
        "SALESBOT_TELEGRAM_CHATID is read by nothing",
        "unknown config key poller.workerz",
        "unknown config key profiles.pipeline",
        "link to nowhere.md: no such file",
    ]
