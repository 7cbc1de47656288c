"""deploy/install.sh into a throwaway root (twice), uninstall.sh, the unit's contract with the
config loader's credential names, and the systemd-analyze checks when the tool is present;
the same for instances of the template unit deploy/salesbot@.service (many accounts)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from salesbot_poller.config import credential_name, load_config, secret_keys, sections

# Every test here runs a script (install, wrapper, systemd-analyze) in a child process.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
UNIT = (REPO / "salesbot.service").read_text()
TEMPLATE = (REPO / "deploy/salesbot@.service").read_text()


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


def install(root: Path, wheel: Path, *options: str) -> subprocess.CompletedProcess[str]:
    args = ["bash", REPO / "deploy/install.sh", "--root", root, "--package", wheel, *options]
    args += ["--pip-args", "--no-deps --no-index"]
    return subprocess.run(args, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def uninstall(root: Path, *options: str) -> subprocess.CompletedProcess[str]:
    args = ["bash", REPO / "deploy/uninstall.sh", "--root", root, *options]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


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
    # The unit's Documentation= is the installed README: the guides it links are installed beside it.
    readme = (root / "opt/salesbot/README.md").read_text()
    for guide in re.findall(r"\]\((docs/[\w.-]+)\)", readme):
        assert (root / "opt/salesbot" / guide).is_file(), guide
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

    # The admin's `systemctl edit salesbot` drop-in: settings, kept like the config until --purge.
    drop_in = root / "etc/systemd/system/salesbot.service.d"
    drop_in.mkdir()
    (drop_in / "override.conf").write_text("[Service]\nEnvironment=TZ=Asia/Yekaterinburg\n")
    kept = subprocess.run(["bash", REPO / "deploy/uninstall.sh", "--root", root], capture_output=True, text=True)
    assert kept.returncode == 0, kept.stderr
    assert not (root / "opt/salesbot").exists() and not (root / "etc/systemd/system/salesbot.service").exists()
    assert config.exists() and (root / "var/lib/salesbot").is_dir() and drop_in.is_dir()
    purged = subprocess.run(
        ["bash", REPO / "deploy/uninstall.sh", "--root", root, "--purge"], capture_output=True, text=True
    )
    assert purged.returncode == 0, purged.stderr
    assert not (root / "etc/salesbot").exists() and not (root / "var/lib/salesbot").exists()
    assert not drop_in.exists()  # a reinstall must not inherit a purged install's settings


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


# Many accounts: instances of deploy/salesbot@.service.


def instance_config(name: str) -> str:
    """config.example.toml with its storage moved into the instance's state directory."""
    example = (REPO / "config.example.toml").read_text()
    example = example.replace(
        '"sqlite:////var/lib/salesbot/salesbot.db"', f'"sqlite:////var/lib/salesbot/{name}/salesbot.db"'
    )
    return example.replace('"/var/lib/salesbot/audio"', f'"/var/lib/salesbot/{name}/audio"')


@pytest.mark.slow
def test_install_two_instances_into_a_throwaway_root_then_purge_one(tmp_path: Path, wheel: Path) -> None:
    root = tmp_path / "root"
    for name in ("acme", "globex"):
        done = install(root, wheel, "--instance", name)
        assert done.returncode == 0, done.stderr
        assert f"salesbot-poller --instance {name} check" in done.stdout
        assert f"systemctl enable --now salesbot@{name}" in done.stdout

    units = root / "etc/systemd/system"
    assert (units / "salesbot@.service").read_text() == TEMPLATE and not (units / "salesbot.service").exists()
    exec_start = re.search(r"^ExecStart=(\S+) run$", TEMPLATE, re.M)
    assert exec_start is not None and os.access(root / exec_start[1].lstrip("/"), os.X_OK)
    # The parents are passed through by every instance's user; each instance's own are closed.
    assert mode(root / "etc/salesbot") == 0o755 and mode(root / "var/lib/salesbot") == 0o755
    for name in ("acme", "globex"):
        etc = root / "etc/salesbot" / name
        config = etc / "config.toml"
        assert config.read_text() == instance_config(name) and mode(config) == 0o600
        storage = tomllib.loads(config.read_text())["storage"]
        assert storage["database"] == f"sqlite:////var/lib/salesbot/{name}/salesbot.db"
        assert storage["audio_dir"] == f"/var/lib/salesbot/{name}/audio"
        assert mode(etc) == 0o750 and mode(etc / "credentials") == 0o750
        assert mode(root / "var/lib/salesbot" / name) == 0o700
    wrapper = root / "usr/local/sbin/salesbot-poller"
    assert mode(wrapper) == 0o755 and "CREDENTIALS_DIRECTORY=/etc/salesbot/credentials" in wrapper.read_text()
    assert 'runuser -u "salesbot-$NAME"' in wrapper.read_text()

    acme = root / "etc/salesbot/acme/config.toml"
    acme.write_text(acme.read_text() + "# edited by the admin\n")
    again = install(root, wheel, "--instance", "acme")
    assert again.returncode == 0, again.stderr
    assert "kept" in again.stdout and acme.read_text().endswith("# edited by the admin\n") and mode(acme) == 0o600

    # The single install would take over /etc/salesbot and /var/lib/salesbot: it is refused here.
    single = install(root, wheel)
    assert single.returncode == 1 and "use --instance NAME" in single.stderr
    assert not (units / "salesbot.service").exists()

    if shutil.which("systemd-analyze"):
        checked = subprocess.run(
            ["bash", REPO / "deploy/check-unit.sh", root], capture_output=True, text=True, timeout=120
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "systemd-analyze verify salesbot@demo.service: ok" in checked.stdout
        score = re.search(r"Overall exposure level for salesbot@demo.service: ([\d.]+)", checked.stdout)
        assert score is not None and float(score[1]) <= 2.5

    # A plain --purge would delete every account's data.
    refused = uninstall(root, "--purge")
    assert refused.returncode == 1 and "--instance NAME --purge" in refused.stderr
    assert acme.exists() and (root / "opt/salesbot/venv").is_dir()

    purged = uninstall(root, "--instance", "acme", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert "instances left: globex" in purged.stdout
    assert not (root / "etc/salesbot/acme").exists() and not (root / "var/lib/salesbot/acme").exists()
    globex = root / "etc/salesbot/globex/config.toml"
    assert globex.read_text() == instance_config("globex") and (root / "var/lib/salesbot/globex").is_dir()
    assert (units / "salesbot@.service").exists() and os.access(root / exec_start[1].lstrip("/"), os.X_OK)

    kept = uninstall(root, "--instance", "globex")
    assert kept.returncode == 0, kept.stderr
    assert globex.exists() and (root / "var/lib/salesbot/globex").is_dir()
    assert uninstall(root, "--instance", "globex", "--purge").returncode == 0
    assert "no instance left" in uninstall(root, "--instance", "globex", "--purge").stdout
    assert uninstall(root, "--purge").returncode == 0
    assert not (units / "salesbot@.service").exists() and not (root / "opt/salesbot").exists()
    assert not (root / "etc/salesbot").exists() and not (root / "var/lib/salesbot").exists()


@pytest.mark.parametrize("name", ["Acme", "-acme", "acme_1", "../acme", "a.b", "", "a" * 24])
def test_install_refuses_a_bad_instance_name(tmp_path: Path, name: str) -> None:
    done = install(tmp_path / "root", tmp_path / "no.whl", "--instance", name)
    assert done.returncode == 1 and "bad instance name" in done.stderr
    assert not (tmp_path / "root").exists()
    assert uninstall(tmp_path / "root", "--instance", name, "--purge").returncode == 1


def test_instances_and_the_single_install_do_not_share_a_server(tmp_path: Path) -> None:
    single = tmp_path / "single"
    (single / "etc/salesbot").mkdir(parents=True)
    (single / "etc/salesbot/config.toml").write_text("")
    done = install(single, tmp_path / "no.whl", "--instance", "acme")
    assert done.returncode == 1 and "single-account install" in done.stderr
    assert not (single / "etc/salesbot/acme").exists()

    many = tmp_path / "many"
    (many / "etc/salesbot/acme").mkdir(parents=True)
    (many / "etc/salesbot/acme/config.toml").write_text("")
    done = install(many, tmp_path / "no.whl")
    assert done.returncode == 1 and "(acme)" in done.stderr and "use --instance NAME" in done.stderr
    assert not (many / "etc/salesbot/config.toml").exists()


def test_wrapper_refuses_a_bad_or_missing_instance(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/salesbot/acme").mkdir(parents=True)
    (root / "etc/salesbot/acme/config.toml").write_text("")
    # The wrapper alone (no venv): what install.sh writes, whichever kind of install.
    script = (REPO / "deploy/install.sh").read_text()
    body = script.split("<<'WRAP'\n", 1)[1].split("\nWRAP\n", 1)[0]
    wrapper = write(tmp_path / "salesbot-poller", body + "\n")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", wrapper, *args], capture_output=True, text=True, timeout=30)

    for args in (["--instance", "../acme", "status"], ["--instance=Acme"], ["--instance"], ["--instance="]):
        done = run(*args)
        assert done.returncode == 2 and "bad instance name" in done.stderr, args
    missing = run("--instance", "no-such-account-here", "status")
    assert missing.returncode == 1 and "no instance no-such-account-here" in missing.stderr


def test_template_is_the_unit_with_per_instance_user_paths_and_credentials() -> None:
    """Every line of salesbot.service that names no salesbot path or user is in the template
    as it is (the same hardening); the others are the instance's own."""

    def service_lines(unit: str) -> list[str]:
        body = unit.split("[Service]\n", 1)[1].split("[Install]", 1)[0]
        return [line for line in body.splitlines() if line and not line.startswith("#")]

    template = service_lines(TEMPLATE)
    shared = [line for line in service_lines(UNIT) if "salesbot" not in line]
    assert shared and [line for line in template if "salesbot" not in line] == shared
    for line in (
        "User=salesbot-%i",
        "Group=salesbot-%i",
        "Environment=SALESBOT_CONFIG=/etc/salesbot/%i/config.toml",
        "EnvironmentFile=-/etc/salesbot/%i/salesbot.env",
        "StateDirectory=salesbot/%i",
        "ConfigurationDirectory=salesbot/%i",
    ):
        assert line in template, line
    for section, model in sections().items():
        for key in secret_keys(model):
            name = credential_name(section, key)
            assert f"LoadCredential={name}:/etc/salesbot/%i/credentials/{name}" in template
            assert f"SetCredential={name}:\\n" in template
    # No setting added or dropped: the same keys, as many lines.
    keys = [line.split("=", 1)[0] for line in template]
    assert keys == [line.split("=", 1)[0] for line in service_lines(UNIT)]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_check_unit_checks_the_unit_and_the_template() -> None:
    checked = subprocess.run(["bash", REPO / "deploy/check-unit.sh"], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for unit in ("salesbot.service", "salesbot@demo.service"):
        assert f"systemd-analyze verify {unit}: ok" in checked.stdout
        score = re.search(rf"Overall exposure level for {re.escape(unit)}: ([\d.]+)", checked.stdout)
        assert score is not None and float(score[1]) <= 2.5


def test_the_deploy_readme_names_the_units_own_watchdog() -> None:
    """deploy/README.md once said 10min while both units set 2min."""
    said = set(re.findall(r"WatchdogSec=(\w+)", (REPO / "deploy" / "README.md").read_text()))
    for unit in (UNIT, TEMPLATE):
        (value,) = re.findall(r"^WatchdogSec=(\S+)$", unit, re.M)
        assert said == {value}, said


def wrapper_in(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The wrapper install.sh writes, its /etc paths moved under tmp_path, its program a script
    printing the user it runs as, its environment and arguments; a `runuser` on PATH that
    says which user and runs the rest."""
    script = (REPO / "deploy/install.sh").read_text()
    body = script.split("<<'WRAP'\n", 1)[1].split("\nWRAP\n", 1)[0]
    body = body.replace("/etc/systemd/system", f"{tmp_path}/units").replace("/etc/salesbot", f"{tmp_path}/etc")
    body = body.replace("/opt/salesbot/venv/bin/salesbot-poller", f"{tmp_path}/bin/program")
    (tmp_path / "bin").mkdir()
    write(tmp_path / "bin/program", '#!/bin/sh\necho "user=$RUN_AS"\nenv | sort\nprintf "arg=%s\\n" "$@"\n')
    write(tmp_path / "bin/runuser", '#!/bin/sh\n[ "$1" = -u ] && RUN_AS=$2 && shift 3\nexport RUN_AS\nexec "$@"\n')
    for name in ("program", "runuser"):
        (tmp_path / "bin" / name).chmod(0o755)
    wrapper = write(tmp_path / "salesbot-poller", body + "\n")
    env = {"PATH": f"{tmp_path}/bin:/usr/bin:/bin"}
    return wrapper, env


def test_the_wrapper_runs_the_cli_with_the_services_env_file_and_drop_in_zone(tmp_path: Path) -> None:
    """`sudo salesbot-poller check` must see what the service sees: the unit loads
    salesbot.env (SALESBOT_* overrides) and `systemctl edit` drop-ins may set TZ."""
    wrapper, env = wrapper_in(tmp_path)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/config.toml").write_text("")
    (tmp_path / "etc/salesbot.env").write_text(
        '# set by the admin\nSALESBOT_TELEGRAM_CHAT_ID="-1001234567890"\n'
        "SALESBOT_ANALYSIS_MODEL='gpt 4o * $(touch pwned)'\nPATH=/nowhere\n"
    )
    (tmp_path / "units/salesbot.service.d").mkdir(parents=True)
    (tmp_path / "units/salesbot.service").write_text("[Service]\nEnvironment=TZ=UTC\n")
    (tmp_path / "units/salesbot.service.d/override.conf").write_text('[Service]\nEnvironment="TZ=Europe/Moscow"\n')
    done = subprocess.run(
        ["sh", wrapper, "status", "two words"], capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert "user=salesbot" in out
    assert "SALESBOT_TELEGRAM_CHAT_ID=-1001234567890" in out
    assert "SALESBOT_ANALYSIS_MODEL=gpt 4o * $(touch pwned)" in out and not (tmp_path / "pwned").exists()
    assert "TZ=Europe/Moscow" in out and f"PATH={tmp_path}/bin:/usr/bin:/bin" in out
    assert out[-2:] == ["arg=status", "arg=two words"]


def test_the_instance_wrapper_reads_the_instances_own_env_file(tmp_path: Path) -> None:
    wrapper, env = wrapper_in(tmp_path)
    for name, chat in (("acme", "-1001111111111"), ("globex", "-1002222222222")):
        (tmp_path / "etc" / name).mkdir(parents=True)
        (tmp_path / "etc" / name / "config.toml").write_text("")
        (tmp_path / "etc" / name / "salesbot.env").write_text(f"SALESBOT_TELEGRAM_CHAT_ID={chat}\n")
    (tmp_path / "units/salesbot@acme.service.d").mkdir(parents=True)
    (tmp_path / "units/salesbot@.service").write_text("[Service]\nEnvironment=TZ=UTC\n")
    (tmp_path / "units/salesbot@acme.service.d/tz.conf").write_text("[Service]\nEnvironment=TZ=Asia/Omsk\n")
    done = subprocess.run(["sh", wrapper, "--instance", "acme", "check"], capture_output=True, text=True, env=env)
    out = done.stdout.splitlines()
    assert done.returncode == 0 and "user=salesbot-acme" in out, done.stderr
    assert "SALESBOT_TELEGRAM_CHAT_ID=-1001111111111" in out and "TZ=Asia/Omsk" in out
    assert f"SALESBOT_CONFIG={tmp_path}/etc/acme/config.toml" in out
