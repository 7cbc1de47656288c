"""The first hour of a new admin (issue 23): a pasted secret with a space, a newline or a
`bot` prefix is one config line naming the key; `check` creates no database, directory or
file; every error about a key says where its value came from, and `check --show-config`
prints the merged config with each value's source; the errors carry hints that fix them.
Each test runs the command line as the admin does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import AMO_TOKEN, BOT_TOKEN, CHAT_ID, OPENAI_KEY, Servers, assert_no_secret, run_cli


def write(servers: Servers, text: str) -> Path:
    path = servers.tmp / "config.toml"
    path.write_text(text)
    path.chmod(0o600)
    (servers.tmp / "state").mkdir(mode=0o700, exist_ok=True)  # as install.sh makes it
    return path


def config_lines(result: object) -> list[str]:
    stderr: str = result.stderr  # type: ignore[attr-defined]
    return [line for line in stderr.splitlines() if line.startswith("salesbot-poller: config: ")]


# 1. Pasted secrets


@pytest.mark.parametrize("command", ["check", "once"])
def test_a_bot_token_pasted_with_its_bot_prefix_is_one_line_saying_what_to_fix(servers: Servers, command: str) -> None:
    path = write(servers, servers.config_text().replace(f'"{BOT_TOKEN}"', f'"bot{BOT_TOKEN}"'))
    result = run_cli(command, config=path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert config_lines(result) == [
        "salesbot-poller: config: telegram.bot_token: remove the leading 'bot': the token is what @BotFather "
        f"gave, like 123456:ABC… (from {path} line 9)"
    ]
    assert_no_secret(result.stdout, result.stderr)
    assert servers.telegram.requests == []


def test_secrets_with_a_space_or_a_line_break_inside_are_named_never_echoed(servers: Servers) -> None:
    credentials = servers.tmp / "credentials"
    credentials.mkdir()
    (credentials / "amocrm_long_lived_token").write_text(AMO_TOKEN[:10] + "\n" + AMO_TOKEN[10:] + "\n")
    text = servers.config_text().replace(f'long_lived_token = "{AMO_TOKEN}"\n', "")
    text = text.replace(f'"{OPENAI_KEY}"', f'"{OPENAI_KEY[:8]} {OPENAI_KEY[8:]}"')
    path = write(servers, text)
    spaced_token = BOT_TOKEN.replace("-", " ", 1)
    env = {"SALESBOT_TELEGRAM_BOT_TOKEN": spaced_token, "CREDENTIALS_DIRECTORY": str(credentials)}
    result = run_cli("check", config=path, extra_env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = config_lines(result)
    assert lines == [
        f"salesbot-poller: config: amocrm.long_lived_token: has a line break inside (at character 11 of "
        f"{len(AMO_TOKEN) + 1}): paste it again as one line (from $CREDENTIALS_DIRECTORY/amocrm_long_lived_token)",
        f"salesbot-poller: config: openai.api_key: has a space inside (at character 9 of {len(OPENAI_KEY) + 1}): "
        f"paste it again as one line (from {path} line 5)",  # the token's line is gone
        f"salesbot-poller: config: telegram.bot_token: has a space inside (at character "
        f"{spaced_token.index(' ') + 1} of {len(BOT_TOKEN)}): paste it again as one line "
        "(from SALESBOT_TELEGRAM_BOT_TOKEN)",
    ]
    for secret in (spaced_token, OPENAI_KEY[:8], OPENAI_KEY[8:], AMO_TOKEN[:10], AMO_TOKEN[10:]):
        assert secret not in result.stdout + result.stderr


def test_whitespace_around_a_secret_and_a_final_newline_are_dropped_silently(servers: Servers) -> None:
    text = servers.config_text().replace(f'"{BOT_TOKEN}"', f'" {BOT_TOKEN}\\n"')
    path = write(servers, text.replace(f'"{OPENAI_KEY}"', f'"{OPENAI_KEY}  "'))
    result = run_cli("check", config=path, extra_env={"SALESBOT_AMOCRM_LONG_LIVED_TOKEN": f"\t{AMO_TOKEN}\n"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "telegram: ok" in result.stdout
    assert "amocrm: ok" in result.stdout


# 2. `check` changes nothing


def test_check_creates_no_directory_when_the_database_directory_is_missing(servers: Servers) -> None:
    missing = servers.tmp / "nowhere"
    servers.database = f"sqlite:///{missing}/salesbot.db"
    path = servers.write_config()
    result = run_cli("check", config=path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        f"config: FAILED: storage.database: the directory {missing} does not exist: create it (as the service's "
        f"user, mode 0700) or fix the path (from {path} line 18)"
    ) in result.stdout
    assert "telegram: ok" in result.stdout  # the services are still checked
    assert not missing.exists()


def test_check_creates_no_file_in_an_existing_empty_directory(servers: Servers) -> None:
    state = servers.tmp / "state"
    state.mkdir()
    path = servers.write_config()
    result = run_cli("check", config=path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"database {servers.database} (not created yet: the service creates it)" in result.stdout
    assert list(state.iterdir()) == []


def test_check_does_not_rotate_oauth_tokens_it_could_not_keep(servers: Servers) -> None:
    oauth = 'client_id = "cid"\nclient_secret = "csecret"\nredirect_uri = "https://bot.example/cb"\n'
    text = servers.config_text().replace(f'long_lived_token = "{AMO_TOKEN}"\n', oauth + 'refresh_token = "r-1"\n')
    path = write(servers, text)
    result = run_cli("check", config=path)
    assert (
        "amocrm: not checked: OAuth tokens are kept in the database, which does not exist yet "
        "(`auth --code` creates it)"
    ) in result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    assert servers.amo.count("/oauth2/access_token") == 0, "a rotated pair kept nowhere would lock the service out"
    assert list((servers.tmp / "state").iterdir()) == []


def test_a_relative_sqlite_path_fails_check_naming_storage_database(servers: Servers) -> None:
    servers.database = "sqlite:///state/salesbot.db"
    path = servers.write_config()
    result = run_cli("check", config=path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "config: FAILED: storage.database: sqlite:///state/salesbot.db is a relative path (it would depend on the "
        "directory the command runs in): use four slashes and an absolute path, e.g. "
        f"sqlite:////var/lib/salesbot/salesbot.db (from {path} line 18)"
    ) in result.stdout
    assert not Path("state/salesbot.db").exists()


# 3. Where a value came from


def test_every_error_names_the_source_of_its_value(servers: Servers, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("no-colon-here\n")
    text = servers.config_text(interval_seconds=0).replace(
        f'bot_token = "{BOT_TOKEN}"', f'bot_token_file = "{token_file}"'
    )
    path = write(servers, text)
    result = run_cli("check", config=path, extra_env={"SALESBOT_POLLER_WORKERS": "99"})
    assert result.returncode == 2
    assert config_lines(result) == [
        f"salesbot-poller: config: telegram.bot_token: must look like 123456:ABC… (digits, a colon, then letters, "
        f"digits, - and _: the token @BotFather gave) (from {token_file}: telegram.bot_token_file, {path} line 9)",
        f"salesbot-poller: config: poller.interval_seconds: Input should be greater than 0 (from {path} line 13)",
        "salesbot-poller: config: poller.workers: Input should be less than or equal to 16 "
        "(from SALESBOT_POLLER_WORKERS)",
    ]


def test_show_config_prints_every_value_with_its_source_and_no_secret(servers: Servers) -> None:
    credentials = servers.tmp / "credentials"
    credentials.mkdir()
    (credentials / "openai_api_key").write_text(OPENAI_KEY + "\n")
    text = servers.config_text().replace(f'api_key = "{OPENAI_KEY}"\n', "")
    text += '[[profiles]]\nname = "Опт"\npipelines = [2002]\n'
    path = write(servers, text)
    env = {"CREDENTIALS_DIRECTORY": str(credentials), "SALESBOT_TELEGRAM_CHAT_ID": "-1009876543210"}
    result = run_cli("check", "--show-config", config=path, extra_env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert_no_secret(out, result.stderr)
    assert f'base_url = "{servers.amo.base_url}"  # {path} line 3' in out
    assert f'long_lived_token = "***"  # {path} line 4' in out
    assert 'api_key = "***"  # $CREDENTIALS_DIRECTORY/openai_api_key' in out
    assert 'chat_id = "-1009876543210"  # SALESBOT_TELEGRAM_CHAT_ID' in out
    assert 'client_secret = ""  # default' in out
    assert "[[profiles]]  # profiles[1]" in out
    assert f"pipelines = [2002]  # {path} line 22" in out  # the api_key line is gone
    assert servers.amo.requests == servers.telegram.requests == servers.openai.requests == []
    assert list((servers.tmp / "state").iterdir()) == []


# 4. Hints that fix things


def test_an_unknown_key_gets_the_known_key_it_was_meant_to_be(servers: Servers) -> None:
    text = servers.config_text().replace("chat_id =", "chat_idd =").replace("[poller]", "[poller]\ndatabase = 1")
    path = write(servers, text)
    result = run_cli("check", config=path)
    assert result.returncode == 2
    lines = config_lines(result)
    assert (
        f"salesbot-poller: config: telegram.chat_idd: unknown key; did you mean chat_id? (from {path} line 10)" in lines
    )
    assert (
        f"salesbot-poller: config: poller.database: unknown key; it is a key of [storage] (from {path} line 13)"
        in lines
    )


def test_positions_are_counted_from_1_in_rubrics_lists_and_profiles(servers: Servers) -> None:
    text = servers.config_text()
    text += '[[analysis.rubric]]\nid = "greeting"\ntitle = "Привет"\n[[analysis.rubric]]\nid = "Bad Id"\ntitle = "x"\n'
    text += '[[profiles]]\nname = "A"\n[[profiles]]\nname = "B"\nusers = [1, "x"]\n'
    path = write(servers, text)
    result = run_cli("check", config=path)
    lines = config_lines(result)
    assert any(line.startswith("salesbot-poller: config: analysis.rubric[2].id: String should match") for line in lines)
    assert any("analysis.rubric[2].id" in line and f"(from {path} line 25)" in line for line in lines), lines
    assert any(
        line.startswith("salesbot-poller: config: profiles[2].users[2]: Input should be a valid integer")
        and f"(from {path} line 31)" in line
        for line in lines
    ), lines
    assert not any("[0]" in line or ".0." in line or ".1." in line for line in lines), lines


def test_an_admin_given_by_name_says_it_must_be_a_numeric_id_and_how_to_get_it(servers: Servers) -> None:
    path = write(servers, servers.config_text().replace("[poller]", 'admins = ["@ivan"]\n[poller]'))
    result = run_cli("check", config=path)
    assert result.returncode == 2
    (line,) = [line for line in config_lines(result) if "admins" in line]
    assert line == (
        "salesbot-poller: config: telegram.admins[1]: must be a numeric Telegram user id, e.g. 123456789, not a "
        "name: send /start to @userinfobot to learn yours; or, once command_chats and an admin are set, each "
        'command from someone else is logged with their id ("ignored: the user is not in telegram.admins") '
        f"(from {path} line 12)"
    )


def test_a_group_id_missing_its_minus_is_a_config_error_with_the_fix(servers: Servers) -> None:
    path = write(servers, servers.config_text().replace(f'chat_id = "{CHAT_ID}"', "chat_id = 1001234567890"))
    result = run_cli("check", config=path)
    assert result.returncode == 2
    assert config_lines(result) == [
        "salesbot-poller: config: telegram.chat_id: group and channel ids start with -100; did you mean "
        f"-1001234567890? (from {path} line 10)"
    ]


@pytest.mark.parametrize("given", ["1234567890", "-1234567890"])
def test_a_supergroup_id_without_minus_100_gets_the_fix_when_telegram_does_not_know_it(
    servers: Servers, given: str
) -> None:
    path = write(servers, servers.config_text().replace('chat_id = "-1001234567890"', f'chat_id = "{given}"'))
    result = run_cli("check", config=path)
    assert result.returncode != 0
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("telegram: FAILED")]
    assert line.endswith("group and channel ids start with -100; did you mean -1001234567890? (telegram.chat_id)")


def test_a_postgresql_url_without_its_driver_names_the_extra_to_install(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # as where the `postgres` extra is not installed
    servers.database = "postgresql://salesbot:pw@127.0.0.1:1/salesbot"
    path = servers.write_config()
    result = run_cli("check", config=path)
    assert result.returncode == 2
    assert config_lines(result) == [
        "salesbot-poller: config: storage.database: PostgreSQL needs its driver, psycopg2: "
        f"pip install 'salesbot-poller[postgres]' (from {path} line 18)"
    ]
    assert "pw" not in result.stderr


def test_a_bad_item_of_a_rubric_file_is_one_line_counted_from_1(servers: Servers, tmp_path: Path) -> None:
    rubric = tmp_path / "rubric.toml"
    rubric.write_text('[[rubric]]\nid = "ok"\ntitle = "x"\n[[rubric]]\nid = "Bad"\ntitle = "y"\n')
    path = write(servers, servers.config_text() + f'[[profiles]]\nname = "A"\nrubric_file = "{rubric}"\n')
    result = run_cli("check", config=path)
    assert result.returncode == 2
    assert config_lines(result) == [
        f"salesbot-poller: config: profiles[1].rubric_file: {rubric}: rubric[2].id: String should match pattern "
        f"'^[a-z][a-z0-9_]*$' (from {path} line 23)"
    ]
