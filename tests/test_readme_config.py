"""The configuration reference (docs/configuration.md) is generated from the config model and must not drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from salesbot_poller.cli import config_doc
from salesbot_poller.config import credential_name, secret_keys, sections

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_config_reference_is_up_to_date() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    assert config_doc.replace_block(text, config_doc.render()) == text, (
        "docs/configuration.md's config reference is stale: "
        "run .venv/bin/python -m salesbot_poller.cli.config_doc --write docs/configuration.md"
    )


def test_reference_lists_every_key_with_its_default_and_description() -> None:
    block = config_doc.render()
    tables = {part.split("`", 1)[0]: part for part in block.split("#### `[")[1:]}  # section -> its table
    for section, model in sections().items():
        rows = {line.split("`")[1]: line for line in tables[section + "]"].splitlines() if line.startswith("| `")}
        assert list(rows) == list(model.model_fields), section
        for key, row in rows.items():
            assert len(row.rsplit(" | ", 1)[1]) > 5, f"{section}.{key} has no description"
        for key in secret_keys(model):
            assert f"systemd credential `{credential_name(section, key)}`" in rows[key]
    assert "| `interval_seconds` | number > 0 | `60` |" in block
    assert '| `log_level` | one of `DEBUG`, `INFO`, `WARNING`, `ERROR` | `"INFO"` |' in block


def test_check_mode_fails_on_a_stale_readme(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "README.md"
    stale.write_text(f"intro\n{config_doc.START}\nold table\n{config_doc.END}\noutro\n")
    assert config_doc.main(["--check", str(stale)]) == 1
    assert "config reference is stale" in capsys.readouterr().out
    assert config_doc.main(["--write", str(stale)]) == 0
    assert config_doc.main(["--check", str(stale)]) == 0
    assert stale.read_text().startswith("intro\n") and stale.read_text().endswith("\noutro\n")
