"""Hostile input: the recording download and the daily budget.

Each row of the issue has a test through the real command line (`once` in a child process
against the loopback fakes), with the hostile values of tests/data/hostile.json; a few
in-process tests measure what the command line cannot (the cut time, threads and sockets
left behind, a redirect from a public host).
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from salesbot_poller.config import OpenAIConfig
from salesbot_poller.errors import PermanentError, TransientError
from salesbot_poller.services import recording_http
from salesbot_poller.services.recording_http import is_public, recording_session
from salesbot_poller.services.recordings import RecordingDownloader
from tests.conftest import CHAT_ID, Servers, run_cli
from tests.fakes import FakeRecordings, make_mp3
from tests.hostile import values

ALERT_CHAT = "-1009990000002"


def config_with(servers: Servers, *, storage: str = "", openai: str = "", telegram: str = "", **poller: Any) -> Path:
    """The loopback config with extra lines in sections (`allow_private_recording_hosts` is on
    there: every fake is on 127.0.0.1; a test turns it off with `storage=PUBLIC_ONLY`)."""
    text = servers.config_text(**poller)
    if "allow_private_recording_hosts = false" in storage:
        text = text.replace("allow_private_recording_hosts = true\n", "")
    text = text.replace("[storage]\n", f"[storage]\n{storage}\n")
    text = text.replace("[openai]\n", f"[openai]\n{openai}\n")
    text = text.replace("[telegram]\n", f"[telegram]\n{telegram}\n")
    path = servers.tmp / "config.toml"
    path.write_text(text)
    return path


PUBLIC_ONLY = "allow_private_recording_hosts = false"


def calls(servers: Servers) -> list[tuple[str, str | None, str | None]]:
    """(stage, last_error, link) of every call, in order."""
    with sqlite3.connect(servers.tmp / "state" / "salesbot.db") as db:
        return list(db.execute("SELECT stage, last_error, link FROM call ORDER BY id"))


def add_call(servers: Servers, n: int, link: str, duration: int = 60) -> None:
    servers.amo.add_call(
        entity_id=7000 + n,
        note_id=n,
        duration=duration,
        phone=f"+7999000{n:04d}",
        link=link,
        created_at=int(time.time()) - 120,
    )


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def settle(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Whether `condition` holds within `seconds` (a fake's handler thread ends on its own)."""
    until = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > until:
            return False
        time.sleep(0.05)
    return True


# --- row 1: a host that announces 10 GB and sends a byte a second ----------------------------


def drip_link(recordings: FakeRecordings) -> str:
    drip = values()["drip"]
    return recordings.add_drip(
        "/rec/slow.mp3",
        make_mp3(3.0),
        announced_bytes=drip["announced_bytes"],
        bytes_per_interval=drip["bytes_per_interval"],
        interval_seconds=drip["interval_seconds"],
    )


@pytest.mark.slow
def test_a_dripping_host_is_cut_at_the_deadline_with_no_thread_or_socket_left(tmp_path: Path) -> None:
    with FakeRecordings() as recordings:
        url = drip_link(recordings) + "?sign=signed-secret-42"
        session = recording_session("test", allow_private=True)
        downloader = RecordingDownloader(session, tmp_path / "audio", deadline_seconds=3.0)
        threads, fds = threading.active_count(), open_fds()
        started = time.monotonic()
        with pytest.raises(TransientError) as caught:
            downloader.download(url, "call-1", 3)
        cut = time.monotonic() - started
        # Not a speed test: without the deadline this download would run for centuries, so any
        # cut proves it. The figure (cut and overshoot, target <= 1 s) is benchmarks/hostile.py's.
        assert 3.0 <= cut <= 3.0 + 10.0, f"cut after {cut:.2f} s"
        assert str(caught.value) == "recording download from 127.0.0.1 took over 3 s"
        assert "signed-secret-42" not in str(caught.value) and "/rec/" not in str(caught.value)
        assert not any(t.name == "recording-deadline" for t in threading.enumerate())
        assert list((tmp_path / "audio").iterdir()) == [], "the partial file is removed"
        # The fake's handler thread (and its end of the socket) goes at its next write.
        assert settle(lambda: threading.active_count() <= threads and open_fds() <= fds), (
            f"threads {threading.active_count()} (was {threads}), fds {open_fds()} (was {fds})"
        )
        session.close()


@pytest.mark.slow
def test_once_cuts_a_dripping_recording_at_the_deadline_and_retries_the_call_later(servers: Servers) -> None:
    url = drip_link(servers.recordings) + "?sign=signed-secret-42"
    add_call(servers, 1, url)
    config = config_with(servers, storage="download_deadline_seconds = 2")
    result = run_cli("once", config=config, timeout=60)
    ended = time.monotonic()
    assert result.returncode == 0, result.stderr
    (request,) = servers.recordings.requests_to("/rec/slow")
    # Proof that the cut came (uncut, the download runs for hours), not a speed target: the
    # figure is benchmarks/hostile.py's.
    assert ended - request.at < 30
    ((stage, error, _),) = calls(servers)
    assert (stage, error) == ("ready", "recording download from 127.0.0.1 took over 2 s")
    assert "signed-secret-42" not in result.stderr
    assert servers.openai.transcriptions == []


# --- row 2: a note of 30 s whose link serves two hours -------------------------------------


def long_mp3(seconds: int) -> bytes:
    """A constant-bitrate MP3 about `seconds` long (PyAV reads its length from its size and
    bitrate), made by repeating a 10 s one: encoding two hours would take half a minute."""
    piece = make_mp3(10.0, bitrate=8000)
    tag = 10 + (piece[6] << 21 | piece[7] << 14 | piece[8] << 7 | piece[9])  # the ID3v2 header
    frames = piece[tag:]
    return frames * round(seconds * 8000 / 8 / len(frames))


def test_a_recording_far_longer_than_its_note_is_not_transcribed(servers: Servers) -> None:
    note, recording = values()["note_says_seconds"], values()["recording_is_seconds"]
    add_call(servers, 1, servers.recordings.add("/rec/long.mp3", long_mp3(recording)), duration=note)
    add_call(servers, 2, servers.recordings.add("/rec/fine.mp3", make_mp3(3.0)), duration=note)  # shorter: fine
    result = run_cli("once", config=config_with(servers))
    assert result.returncode == 0, result.stderr
    (long_call, fine_call) = calls(servers)
    assert long_call[0] == "failed"
    assert re.fullmatch(
        r"recording from 127\.0\.0\.1 is (1:59|2:00):\d\d long but the note says 0:30 \(more than 1\.5x \+ 60 s\): "
        r"not transcribed",
        long_call[1] or "",
    ), long_call[1]
    assert fine_call[0] == "notified"
    assert len(servers.openai.transcriptions) == 1, "only the fine call was sent for transcription"
    assert not any(p.name.startswith("call-1.") for p in (servers.tmp / "state" / "audio").glob("*"))


# --- row 3: links to private, loopback and link-local addresses ----------------------------


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2a00:1450:4010::64", True),
        ("169.254.169.254", False),
        ("127.0.0.1", False),
        ("10.0.0.5", False),
        ("172.16.0.1", False),
        ("192.168.1.10", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1%eth0", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:10.0.0.5", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
    ],
)
def test_only_public_unicast_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(address) is public


def test_once_refuses_every_private_recording_link(servers: Servers) -> None:
    links = list(values()["private_links"])
    local = servers.recordings.add("/rec/1.mp3", make_mp3(3.0))
    links.append(servers.recordings.add_redirect("/r/1", local))  # a redirect to another local port
    for n, link in enumerate(links, 1):
        add_call(servers, n, link)
    result = run_cli("once", config=config_with(servers, storage=PUBLIC_ONLY), timeout=60)
    assert result.returncode == 0, result.stderr
    rows = calls(servers)
    assert len(rows) == len(links)
    for stage, error, link in rows:
        host = urlsplit(link or "").hostname or "?"
        assert stage == "failed", (link, error)
        assert re.fullmatch(
            rf"recording link points at a private address \({re.escape(host)} -> [0-9a-f.:]+\); "
            r"set storage\.allow_private_recording_hosts = true if your PBX is on the office network",
            error or "",
        ), (link, error)
    assert servers.recordings.requests == [], "nothing was fetched from a private address"
    assert servers.openai.transcriptions == []


def test_a_redirect_from_a_public_host_to_a_private_one_is_refused(
    servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake stands for a public host here: 127.0.0.1 counts as public, nothing else private does.
    monkeypatch.setattr(recording_http, "is_public", lambda address: address == "127.0.0.1")
    downloader = RecordingDownloader(recording_session("test"), tmp_path / "audio")
    for target in ("http://169.254.169.254/latest/meta-data/", "http://[::1]:1/rec.mp3"):
        url = servers.recordings.add_redirect("/r/meta", target)
        with pytest.raises(PermanentError, match=r"private address \((169\.254\.169\.254|::1) -> "):
            downloader.download(url, "call-1", 60)
    assert servers.recordings.count("/r/meta") == 2, "the first hop was fetched, the redirect was not"


def test_the_connected_address_is_checked_too(
    servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DNS rebinding: the name resolves to a public address for the check, then to a private one
    # for the connection. The address the socket is connected to is what counts.
    real = socket.getaddrinfo
    answers: list[str] = []

    def rebinding(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        answers.append(str(host))
        if host == "rebind.test" and len(answers) == 1:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]
        return real("127.0.0.1" if host == "rebind.test" else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = servers.recordings.add("/rec/1.mp3", make_mp3(3.0)).replace("127.0.0.1", "rebind.test")
    downloader = RecordingDownloader(recording_session("test"), tmp_path / "audio")
    with pytest.raises(PermanentError, match=r"private address \(rebind\.test -> 127\.0\.0\.1\)"):
        downloader.download(url, "call-1", 60)
    assert answers[:2] == ["rebind.test", "rebind.test"]
    assert servers.recordings.requests == []


# --- row 4: ~/.netrc ------------------------------------------------------------------------


def test_a_netrc_password_never_reaches_the_recording_host(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> None:
    home = servers.tmp / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(f"machine 127.0.0.1 login salesbot password {values()['netrc_password']}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("NETRC", raising=False)
    url = servers.recordings.add("/rec/1.mp3", make_mp3(3.0))
    assert requests.utils.get_netrc_auth(url) is not None, "the test's .netrc is one requests would use"
    add_call(servers, 1, url)
    result = run_cli("once", config=config_with(servers))
    assert result.returncode == 0, result.stderr
    assert calls(servers)[0][0] == "notified"
    assert servers.recordings.count("/rec/1.mp3") >= 1
    assert servers.recordings.authorization_headers_seen() == []
    seen = [r.headers.get("authorization", "") for fake in (servers.amo, servers.telegram) for r in fake.requests]
    assert not any(h.startswith("Basic") for h in seen), "nor does it reach amoCRM or Telegram"


# --- the daily budget: on by default, and the alert chat is told once a day -----------------


def test_the_alert_chat_hears_once_that_the_budget_holds_calls_back(servers: Servers) -> None:
    servers.telegram.known_chats = {CHAT_ID, ALERT_CHAT}
    for n in (1, 2, 3):
        add_call(servers, n, servers.recordings.add(f"/rec/{n}.mp3", make_mp3(3.0, freq=300.0 + 100 * n)))
    # $60 a minute of audio: the first 3 s call spends $3 of a $1 budget, the others wait.
    config = config_with(
        servers,
        openai="daily_budget_usd = 1.0\naudio_price_per_minute_usd = 60.0",
        telegram=f'alert_chat_id = "{ALERT_CHAT}"',
        workers=1,
    )
    first = run_cli("once", config=config)
    assert first.returncode == 0, first.stderr
    assert [row[0] for row in calls(servers)] == ["notified", "downloaded", "downloaded"]
    for _ in range(2):  # a later pass tells the alert chat; a restart does not tell it again
        again = run_cli("once", config=config)
        assert again.returncode == 0, again.stderr
    notices = [m for m in servers.telegram.messages if "openai.daily_budget_usd" in m["text"]]
    assert len(notices) == 1, notices
    (notice,) = notices
    assert notice["chat_id"] == ALERT_CHAT
    assert re.search(r"Звонков ждут расшифровки: 2; они продолжатся \d\d\.\d\d \d\d:\d\d\.", notice["visible_text"])
    assert re.search(r"Потрачено сегодня \(UTC\): ~\$\d+\.\d\d из \$1\.00", notice["visible_text"])
    assert len(servers.openai.transcriptions) == 1


def test_the_daily_budget_is_fifty_dollars_unless_set() -> None:
    assert OpenAIConfig().daily_budget_usd == 50.0


def test_the_service_session_takes_no_netrc_password_to_a_host_it_is_redirected_to(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    from salesbot_poller.app import _session

    home = servers.tmp / "home"
    home.mkdir()
    (home / ".netrc").write_text(f"machine 127.0.0.1 login salesbot password {values()['netrc_password']}\n")
    (home / ".netrc").chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("NETRC", raising=False)
    target = servers.recordings.add("/landing.mp3", make_mp3(1.0))
    servers.amo.fail_next(r"^/moved", 302, b"", {"Location": target})
    session = _session()
    try:
        answer = session.get(f"{servers.amo.base_url}/moved", headers={"Authorization": "Bearer ours"}, timeout=5)
    finally:
        session.close()
    assert answer.status_code == 200
    assert servers.recordings.authorization_headers_seen() == [], "neither ours nor the .netrc's"


def test_the_deadline_also_cuts_a_tls_handshake_that_never_ends() -> None:
    import socket
    import ssl
    import threading

    from salesbot_poller.services.recording_http import Deadline

    listener = socket.create_server(("127.0.0.1", 0))  # accepts, then says nothing: no ServerHello
    port = listener.getsockname()[1]
    outcome: list[BaseException] = []
    try:
        with Deadline(0.5):
            raw = socket.create_connection(("127.0.0.1", port), timeout=30)
            Deadline.current().watch_socket(raw)  # type: ignore[union-attr] -- as the connection does
            tls = ssl.create_default_context().wrap_socket(
                raw, server_hostname="rec.example", do_handshake_on_connect=False
            )

            def handshake() -> None:
                try:
                    tls.do_handshake()
                except (OSError, ssl.SSLError) as exc:
                    outcome.append(exc)

            worker = threading.Thread(target=handshake)
            worker.start()
            worker.join(timeout=10)
        tls.close()
    finally:
        listener.close()
    assert not worker.is_alive() and outcome, "the handshake was cut, not left to the 30 s timeout"
