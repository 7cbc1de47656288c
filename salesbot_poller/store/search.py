"""Finding calls by the words of their transcripts (`/find`).

Contract:
- On SQLite with FTS5, `create_index(db)` (migration `0012_call_search`) makes `call_fts`, an
  external-content FTS5 index over `call.transcript`, and three triggers that keep it in step
  with every write of that column: a transcript stored, replaced or cleared (retention,
  `forget`) is indexed, re-indexed or removed in the same transaction as the write, whatever
  code path wrote it. Existing transcripts are indexed once, at the migration.
- On PostgreSQL, `create_index(db)` (migration `0020_query_indexes`) makes a GIN index on
  the transcript's `tsvector` in the Russian configuration (an expression index: nothing to
  keep in step, the server indexes every write itself). A word matches as a prefix of a
  word of the transcript once both are stemmed: "возраж" finds "возражение", and so does
  "возражения" (FTS5 would not); Russian stop words ("и", "не") are left out of the search,
  and a search of stop words only finds nothing.
- Elsewhere (another database, or a SQLite built without FTS5) there is no index, and
  `matching_ids` falls back to a portable query: every word must occur in the transcript
  (`LIKE`, case-insensitive where the database can).
- `matching_ids(db, words, limit)`: ids of calls whose transcript holds every one of
  `words` (a word matches as a prefix with FTS5: "возраж" finds "возражение"), newest
  call first, at most `limit`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import peewee

from salesbot_poller.store.models import Call

log = logging.getLogger(__name__)

FTS_TABLE = "call_fts"
_TABLE = Call._meta.table_name

_DDL = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5("
    f"transcript, content='{_TABLE}', content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    # FTS5's own pattern for an external-content index: every row is in it (a NULL text as an
    # empty one), and each change first deletes the old text by its exact old value.
    f"""CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_insert AFTER INSERT ON {_TABLE} BEGIN
      INSERT INTO {FTS_TABLE}(rowid, transcript) VALUES (new.id, new.transcript);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_delete AFTER DELETE ON {_TABLE} BEGIN
      INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, transcript) VALUES ('delete', old.id, old.transcript);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_update AFTER UPDATE OF transcript ON {_TABLE} BEGIN
      INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, transcript) VALUES ('delete', old.id, old.transcript);
      INSERT INTO {FTS_TABLE}(rowid, transcript) VALUES (new.id, new.transcript);
    END""",
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')",  # the transcripts stored so far
)


def _is_sqlite(db: peewee.Database) -> bool:
    return isinstance(db, peewee.SqliteDatabase)


def has_fts5(db: peewee.Database) -> bool:
    """Whether this SQLite can build FTS5 tables (Python's usually can)."""
    if not _is_sqlite(db):
        return False
    try:
        rows = db.execute_sql("PRAGMA compile_options").fetchall()  # type: ignore[no-untyped-call]
    except peewee.DatabaseError:
        return False
    return any(str(row[0]).upper() == "ENABLE_FTS5" for row in rows)


# PostgreSQL: the text search index (0020_query_indexes) and the query it serves; the query
# repeats the index's expression exactly, or the planner could not use it.
PG_INDEX = "call_transcript_search"
PG_VECTOR = f"to_tsvector('russian'::regconfig, {_TABLE}.transcript)"
PG_DDL = f"CREATE INDEX IF NOT EXISTS {PG_INDEX} ON {_TABLE} USING gin (({PG_VECTOR}))"


def create_postgres_index(db: peewee.Database) -> None:
    """PostgreSQL's index over the transcripts (see the contract); nothing elsewhere."""
    if isinstance(db, peewee.PostgresqlDatabase):
        db.execute_sql(PG_DDL)  # type: ignore[no-untyped-call]


def create_index(db: peewee.Database) -> None:
    """The index and its triggers, filled with the stored transcripts (see the contract)."""
    if not has_fts5(db):
        if _is_sqlite(db):
            log.warning("this SQLite has no FTS5: /find searches transcripts without an index (slower)")
        return
    for statement in _DDL:
        db.execute_sql(statement)  # type: ignore[no-untyped-call]


def indexed(db: peewee.Database) -> bool:
    return _is_sqlite(db) and FTS_TABLE in db.get_tables()


def _postgres_indexed(db: peewee.Database) -> bool:
    return isinstance(db, peewee.PostgresqlDatabase) and any(index.name == PG_INDEX for index in db.get_indexes(_TABLE))


_WORD = re.compile(r"\w+")


def query_words(text: str) -> list[str]:
    """The words of a search text (letters and digits; punctuation and FTS syntax dropped)."""
    return _WORD.findall(text.lower())


def matching_ids(db: peewee.Database, words: Iterable[str], limit: int) -> list[int]:
    """See the module contract. No words: no calls."""
    terms = [word for word in words if word]
    if not terms:
        return []
    if indexed(db):
        # Each word a quoted prefix term (quotes doubled): nothing typed is read as FTS syntax.
        match = " AND ".join('"{}"*'.format(word.replace('"', '""')) for word in terms)
        cursor = db.execute_sql(  # type: ignore[no-untyped-call]
            f"SELECT c.id FROM {FTS_TABLE} f JOIN {_TABLE} c ON c.id = f.rowid "
            f"WHERE {FTS_TABLE} MATCH ? AND c.transcript IS NOT NULL "
            "ORDER BY c.event_created_at DESC, c.id DESC LIMIT ?",
            (match, limit),
        )
        return [int(row[0]) for row in cursor.fetchall()]
    if _postgres_indexed(db):
        # Each word a quoted prefix term (a quote doubled): nothing typed is read as syntax.
        terms_query = " & ".join("'{}':*".format(word.replace("'", "''").replace("\\", "\\\\")) for word in terms)
        # "+ 0": the order is not the time index's, so the planner cannot walk that index
        # newest first, stemming every transcript until ten match (7.9 s at 100k calls for a
        # rare word); it takes the GIN index's matches and sorts them (0.4 ms; 22 ms for a
        # word in most calls).
        cursor = db.execute_sql(  # type: ignore[no-untyped-call]
            f"SELECT {_TABLE}.id FROM {_TABLE} WHERE {PG_VECTOR} @@ to_tsquery('russian'::regconfig, %s) "
            f"ORDER BY {_TABLE}.event_created_at + 0 DESC, {_TABLE}.id + 0 DESC LIMIT %s",
            (terms_query, limit),
        )
        return [int(row[0]) for row in cursor.fetchall()]
    query = Call.select(Call.id).where(Call.transcript.is_null(False))
    for word in terms:
        query = query.where(Call.transcript.contains(word))  # ILIKE where there is one
    rows = query.order_by(Call.event_created_at.desc(), Call.id.desc()).limit(limit)
    return [int(row.id) for row in rows]
