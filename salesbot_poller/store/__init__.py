"""The durable store: see `store.core` for the contract. Split in modules of one concern each:
`models` (the tables), `migrations`, `bi` (the BI tables' rows), `search` (`/find`'s index),
`files` (the database's files and connections), `postgres` (a PostgreSQL URL's connections,
run lock and retryable errors), and `Store` (every query of the application) in `core`,
assembled from one mixin per concern: `base` (the database, redaction, small state),
`events` (the events window and cursor), `claims` (due calls and their claims), `calls` (a
call's updates and reads), `deliveries` (delivery rows), `usage` (what the calls cost),
`budget` (the daily budget's reservations), `failures` (failed calls and `retry`),
`personal` (retention and `forget`), `trackers` (tracker hits and misses), `clips` (quote
clips sent), `reports` (the report and command queries), `report_figures` (the reports'
other figures in SQL) and `corrections` (people's verdicts, button presses)."""

from salesbot_poller.store.core import COMMIT_PATIENCE_SECONDS, CURSOR_KEY, Store
from salesbot_poller.store.files import (
    BUSY_TIMEOUT_MS,
    PRIVATE_DIR,
    PRIVATE_FILE,
    WAL_FORMAT,
    make_private,
    private_dir,
    sqlite_file,
)
from salesbot_poller.store.migrations import MIGRATIONS, add_missing_columns
from salesbot_poller.store.models import (
    BiCall,
    BiObjection,
    BiRubricItem,
    Call,
    Clip,
    Delivery,
    HandledCallback,
    Migration,
    SeenEvent,
    State,
    TrackerHit,
    TrackerMiss,
    UploadHold,
    Usage,
    VerdictCorrection,
    database_proxy,
)

__all__ = [
    "BUSY_TIMEOUT_MS",
    "COMMIT_PATIENCE_SECONDS",
    "CURSOR_KEY",
    "MIGRATIONS",
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "WAL_FORMAT",
    "BiCall",
    "BiObjection",
    "BiRubricItem",
    "Call",
    "Clip",
    "Delivery",
    "HandledCallback",
    "Migration",
    "SeenEvent",
    "State",
    "Store",
    "TrackerHit",
    "TrackerMiss",
    "UploadHold",
    "Usage",
    "VerdictCorrection",
    "add_missing_columns",
    "database_proxy",
    "make_private",
    "private_dir",
    "sqlite_file",
]
