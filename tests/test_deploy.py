"""deploy/install.sh into a throwaway root (twice), uninstall.sh, the unit's contract with the
config loader's credential names, and the systemd-analyze checks when the tool is present."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from salesbot_poller.config import credential_name, load_config, secret_keys, sections

REPO = Path(__file__).resolve().parent.parent
UNIT = (REPO / "salesbot.service").read_text()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as a wheel, built offline, so install.sh needs no package index."""
    out = tmp_path_factory.mktemp("wheelhouse")
    # Built from a copy: setuptools leaves build/ and *.egg-info beside the sources it builds.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "salesbot_poller", source / "salesbot_poller", ignore=shutil.ignore_patterns("__pycache__"))
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", *offline, "-w", out, source],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return next(out.glob("salesbot_poller-*.whl"))


def install(root: Path, wheel: Path) -> subprocess.CompletedProcess[str]:
    args = ["bash", REPO / "deploy/install.sh", "--root", root, "--package", wheel]
    args += ["--pip-args", "--no-deps --no-index"]
    return subprocess.run(args, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_install_into_a_throwaway_root_twice_then_uninstall(tmp_path: Path, wheel: Path) -> None:
    root = tmp_path / "root"
    first = install(root, wheel)
    assert first.returncode == 0, first.stderr
    assert "salesbot-poller check" in first.stdout and "systemctl enable --now salesbot" in first.stdout

    exec_start = re.search(r"^ExecStart=(\S+) run$", UNIT, re.M)
    assert exec_start is not None
    program = root / exec_start[1].lstrip("/")
    assert program == root / "opt/salesbot/venv/bin/salesbot-poller" and os.access(program, os.X_OK)
    assert (root / "etc/systemd/system/salesbot.service").read_text() == UNIT
    config = root / "etc/salesbot/config.toml"
    assert config.read_text() == (REPO / "config.example.toml").read_text() and mode(config) == 0o600
    assert mode(root / "etc/salesbot") == 0o750 and mode(root / "etc/salesbot/credentials") == 0o750
    assert mode(root / "var/lib/salesbot") == 0o700
    wrapper = root / "usr/local/sbin/salesbot-poller"
    assert mode(wrapper) == 0o755 and "CREDENTIALS_DIRECTORY=/etc/salesbot/credentials" in wrapper.read_text()
    version = subprocess.run(
        [root / "opt/salesbot/venv/bin/python", "-c", "import salesbot_poller; print(salesbot_poller.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip()

    config.write_text(config.read_text() + "# edited by the admin\n")
    second = install(root, wheel)
    assert second.returncode == 0, second.stderr
    assert "kept" in second.stdout and config.read_text().endswith("# edited by the admin\n")
    assert mode(config) == 0o600 and os.access(program, os.X_OK)

    if shutil.which("systemd-analyze"):
        checked = subprocess.run(
            ["bash", REPO / "deploy/check-unit.sh", root], capture_output=True, text=True, timeout=120
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        score = re.search(r"Overall exposure level for salesbot.service: ([\d.]+)", checked.stdout)
        assert score is not None and float(score[1]) <= 2.5

    kept = subprocess.run(["bash", REPO / "deploy/uninstall.sh", "--root", root], capture_output=True, text=True)
    assert kept.returncode == 0, kept.stderr
    assert not (root / "opt/salesbot").exists() and not (root / "etc/systemd/system/salesbot.service").exists()
    assert config.exists() and (root / "var/lib/salesbot").is_dir()
    purged = subprocess.run(
        ["bash", REPO / "deploy/uninstall.sh", "--root", root, "--purge"], capture_output=True, text=True
    )
    assert purged.returncode == 0, purged.stderr
    assert not (root / "etc/salesbot").exists() and not (root / "var/lib/salesbot").exists()


def test_unit_loads_every_secret_as_a_credential_with_a_fallback() -> None:
    for section, model in sections().items():
        for key in secret_keys(model):
            name = credential_name(section, key)
            assert f"LoadCredential={name}:/etc/salesbot/credentials/{name}\n" in UNIT
            assert f"SetCredential={name}:" in UNIT  # a missing file must not stop the service


def test_unit_has_the_required_service_settings() -> None:
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "Restart=on-failure",
        "User=salesbot",
        "StateDirectory=salesbot",
        "ConfigurationDirectory=salesbot",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=",
    ):
        assert re.search(rf"^{re.escape(line)}$", UNIT, re.M), line
    assert re.search(r"^WatchdogSec=\S+$", UNIT, re.M) and re.search(r"^MemoryMax=\S+$", UNIT, re.M)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BASE = """
[amocrm]
base_url = "https://example.amocrm.ru"
[telegram]
chat_id = "-100123"
"""


def test_secrets_come_from_credentials_and_key_files(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    write(creds / "amocrm_long_lived_token", "amo-token-from-credential\n")
    write(creds / "openai_api_key", "sk-from-credential\n")
    write(creds / "telegram_bot_token", "\n")  # the unit's SetCredential fallback: "not given"
    token_file = write(tmp_path / "bot", "123:from-key-file\n")
    config = write(
        tmp_path / "config.toml",
        BASE.replace("[telegram]", f'[telegram]\nbot_token_file = "{token_file}"') + '[openai]\napi_key = ""\n',
    )
    loaded = load_config(config, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert loaded.amocrm.long_lived_token.get_secret_value() == "amo-token-from-credential"
    assert loaded.openai.api_key.get_secret_value() == "sk-from-credential"
    assert loaded.telegram.bot_token.get_secret_value() == "123:from-key-file"

    # The environment and the config file win over a credential.
    env = {"CREDENTIALS_DIRECTORY": str(creds), "SALESBOT_OPENAI_API_KEY": "sk-from-env"}
    assert load_config(config, env).openai.api_key.get_secret_value() == "sk-from-env"


def test_credential_fallback_and_key_file_problems_are_reported(tmp_path: Path) -> None:
    from salesbot_poller.errors import ConfigError

    creds = tmp_path / "credentials"
    creds.mkdir()
    write(creds / "openai_api_key", "\n")
    config = write(
        tmp_path / "config.toml",
        BASE.replace("[telegram]", '[telegram]\nbot_token = "1:x"\nbot_token_file = "/x"')
        + f'[openai]\napi_key_file = "{tmp_path}/missing"\n',
    )
    with pytest.raises(ConfigError) as raised:
        load_config(config, {"CREDENTIALS_DIRECTORY": str(creds)})
    problems = "\n".join(raised.value.problems)
    assert "telegram.bot_token_file: set either bot_token or bot_token_file, not both" in problems
    assert "openai.api_key_file: cannot read" in problems
    assert "amocrm.long_lived_token: required" in problems
