"""What `forget` removes leaves the database's files, not just its rows: whatever the SQLite
build's `secure_delete` default, no removed word stays in free space, the search index or
the WAL (the bytes of the files are read)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peewee
import pytest

from salesbot_poller.store import Call, Store
from tests.bi_seed import seed_analysed

START = 1_793_000_000
SECRET_WORD = "зеленоглазый"  # said once, in one call: the search index keeps it as a token
SECRET_NUMBER = "+79161234567"


def off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """A SQLite build whose `secure_delete` is off by default (Debian's is on)."""
    real: Callable[..., sqlite3.Connection] = peewee.sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = real(*args, **kwargs)
        connection.execute("PRAGMA secure_delete = 0")
        return connection

    monkeypatch.setattr(peewee.sqlite3, "connect", connect)


def file_bytes(db: Path) -> bytes:
    return b"".join(path.read_bytes() for path in db.parent.iterdir() if path.name.startswith(db.name))


@pytest.mark.parametrize("build", ["secure_delete off by default", "the build's default"])
def test_forgotten_text_is_gone_from_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build: str) -> None:
    if build.endswith("off by default"):
        off_by_default(monkeypatch)
    db = tmp_path / "salesbot.db"
    store = Store.open(f"sqlite:///{db}", START)
    seed_analysed(store, 40, start=START)
    long_text = " ".join(f"Менеджер: алло, {SECRET_WORD} клиент, ваш номер {SECRET_NUMBER}?" for _ in range(60))
    Call.update(transcript=long_text, phone=SECRET_NUMBER).where(Call.id == 7).execute()
    for n in range(1, 41):
        if n != 7:
            Call.update(transcript=f"обычный разговор номер {n} про доставку").where(Call.id == n).execute()
    store.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    assert SECRET_WORD.encode() in file_bytes(db) and SECRET_NUMBER.encode() in file_bytes(db)

    store.clear_personal([Call.get_by_id(7)], START + 100, "forget")
    done = store.reclaim_space()
    assert "search index rebuilt" in done
    assert store.db.execute_sql("PRAGMA secure_delete").fetchone() == (1,)
    store.close()

    raw = file_bytes(db)
    assert SECRET_WORD.encode() not in raw, "the word is still in the file"
    assert SECRET_NUMBER.encode() not in raw and SECRET_NUMBER[2:].encode() not in raw
    assert "про доставку".encode() in raw, "other calls' transcripts are kept"


def test_a_new_database_gives_freed_pages_back(tmp_path: Path) -> None:
    db = tmp_path / "salesbot.db"
    store = Store.open(f"sqlite:///{db}", START)
    assert store.db.execute_sql("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
    seed_analysed(store, 300, start=START)
    Call.update(transcript="слово " * 2000).execute()
    store.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    full = db.stat().st_size
    store.clear_personal(list(Call.select()), START + 100, "forget")
    store.reclaim_space()
    store.close()
    assert db.stat().st_size < full / 2, (full, db.stat().st_size)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_vacuums_the_tables_forget_wrote(database_url: str) -> None:
    store = Store.open(database_url, START)
    seed_analysed(store, 20, start=START)
    store.clear_personal(list(Call.select().where(Call.id <= 5)), START + 100, "forget")
    assert store.reclaim_space() == "VACUUM run"
    vacuumed = store.db.execute_sql(
        "SELECT relname FROM pg_stat_user_tables WHERE last_vacuum IS NOT NULL ORDER BY relname"
    ).fetchall()
    store.close()
    assert {"call", "delivery", "bi_call"} <= {name for (name,) in vacuumed}
