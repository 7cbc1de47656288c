"""Scores in amoCRM lead fields (opt-in: `amocrm.score_field_id`, `amocrm.last_call_field_id`,
`amocrm.tag_low_score`).

Contract:
- `plan(config, call, analysis)`: for an analysed call on a lead, with any of those keys set,
  one item `call:<id>:amo_fields` (kind `amo_fields`): the lead's PATCH — the call's score
  (when it has one) in `score_field_id`, the call's time (Unix seconds) in
  `last_call_field_id`, and `tag_low_score` in `tags_to_add` when the score is below
  `tag_below_score`. `tags_to_add` adds to the lead's tags and keeps the others (amoCRM's
  «Редактирование сделок»; `_embedded.tags` would replace them all). The bot never removes
  the tag. A call on a contact or company (no lead), or with nothing to write: nothing.
- `send(app, rows, now)` writes such rows through the throttled amoCRM client, up to
  `BATCH` leads per `PATCH /api/v4/leads`, each row exactly once:
  - "Last call" is the newest call of the lead by start time: of several rows for one lead
    only the newest is written, and a row whose lead already got the fields of a newer call
    is not written at all; either is closed as superseded (done, nothing sent).
  - Before a PATCH leaves, its rows are marked `attempted_at` (committed). A row found
    marked (the process died, or the answer was lost, after amoCRM may have applied it) is
    first compared with the lead as amoCRM has it now (`GET /api/v4/leads`); when the lead
    already shows it, the row is closed without sending it again.
  - After amoCRM answers, each row is marked done with its lead id, in one transaction.
  - A batch refused for good (`PermanentError`: a deleted lead, a field of the wrong type)
    is sent again one row at a time, so only the bad row is closed with its error.
  - Transient and fatal errors propagate: the caller puts the rows off (`delivery`).
- `field_problems(config, fields)`: for `check`, one line per configured field the account's
  lead fields (`GET /api/v4/leads/custom_fields`) lack or have of the wrong type (numeric for
  the score; date or date_time for the last call), naming the key.
- `send_due(app, now)`: the due rows of delivered calls (`Store.due_extras`), batched as
  above; a failure puts them all off (`delivery.put_off`). A dry run prints them.
- The rows are sent from one thread only (the intake lane, or `once` after its work), never
  from the workers: that is what lets one PATCH carry many calls' leads, and keeps the
  newest-call check free of races.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from functools import partial
from typing import Any

from salesbot_poller.config import Config
from salesbot_poller.domain import CallAnalysis, Planned
from salesbot_poller.errors import FatalError, PermanentError, TransientError
from salesbot_poller.pipeline import delivery
from salesbot_poller.pipeline.context import App
from salesbot_poller.store import Call, Delivery

log = logging.getLogger(__name__)

KIND = "amo_fields"
PATH = "/api/v4/leads"
BATCH = 50  # leads per PATCH: amoCRM takes up to 250, 50 keeps one refused batch cheap to redo
DAY = 24 * 3600


def plan(config: Config, call: Call, analysis: CallAnalysis) -> list[Planned]:
    """See the module contract."""
    amo = config.amocrm
    if not amo.writes_lead_fields or call.entity_type != "leads":
        return []
    lead: dict[str, Any] = {"id": call.entity_id}
    values = []
    if amo.score_field_id and analysis.score is not None:
        values.append({"field_id": amo.score_field_id, "values": [{"value": analysis.score}]})
    if amo.last_call_field_id:
        values.append({"field_id": amo.last_call_field_id, "values": [{"value": call.event_created_at}]})
    if values:
        lead["custom_fields_values"] = values
    tag = amo.tag_low_score.strip()
    if tag and analysis.score is not None and analysis.score < amo.tag_below_score:
        lead["tags_to_add"] = [{"name": tag}]
    if len(lead) == 1:
        return []
    payload = {
        "method": "PATCH",
        "path": PATH,
        "body": [lead],
        "lead_id": call.entity_id,
        "started_at": call.event_created_at,
    }
    return [Planned(f"call:{call.id}:{KIND}", KIND, None, payload)]


SCORE_TYPES = ("numeric",)
DATE_TYPES = ("date", "date_time")


def field_problems(config: Config, fields: Iterable[dict[str, Any]]) -> list[str]:
    """See the module contract."""
    amo = config.amocrm
    by_id = {field.get("id"): field for field in fields}
    problems = []
    for key, field_id, types, what in (
        ("score_field_id", amo.score_field_id, SCORE_TYPES, "numeric"),
        ("last_call_field_id", amo.last_call_field_id, DATE_TYPES, "date or date_time"),
    ):
        if not field_id:
            continue
        field = by_id.get(field_id)
        if field is None:
            problems.append(f"amocrm.{key}: the account has no lead field {field_id}")
        elif field.get("type") not in types:
            name = field.get("name") or "?"
            kind = field.get("type") or "?"
            problems.append(f"amocrm.{key}: lead field {field_id} «{name}» is of type {kind}, it must be {what}")
    return problems


def _payload(row: Delivery) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(row.payload_json)
    return payload


def _order(row: Delivery) -> tuple[int, int]:
    return int(_payload(row)["started_at"]), int(row.call_id or 0)


def _shows(lead: dict[str, Any] | None, wanted: dict[str, Any], date_field: int) -> bool:
    """Whether `lead` (as amoCRM has it now) already shows the PATCH `wanted`."""
    if lead is None:
        return False
    have = {
        v.get("field_id"): (v.get("values") or [{}])[0].get("value")
        for v in lead.get("custom_fields_values") or []
        if isinstance(v, dict)
    }
    for value in wanted.get("custom_fields_values") or []:
        expected, actual = value["values"][0]["value"], have.get(value["field_id"])
        # A date field may come back as that day's midnight: within a day is the same write.
        tolerance = DAY if value["field_id"] == date_field else 0.5
        try:
            if actual is None or abs(float(actual) - float(expected)) >= tolerance:
                return False
        except (TypeError, ValueError):  # a value of another shape: not ours
            return False
    tags = {t.get("name") for t in (lead.get("_embedded") or {}).get("tags") or [] if isinstance(t, dict)}
    return all(tag["name"] in tags for tag in wanted.get("tags_to_add") or [])


def _close(app: App, rows: list[Delivery], now: int, sent: bool, note: str) -> None:
    store = app.store

    def write() -> None:
        with store.db.atomic():
            for row in rows:
                ids = [int(_payload(row)["lead_id"])] if sent else []
                store.update_delivery(row, sent_ids_json=json.dumps(ids), done_at=now, error=None)

    store.committed(write)
    for row in rows:
        log.info("%s (%s) %s", row.kind, row.key, note)


def _superseded(app: App, rows: list[Delivery], now: int) -> list[Delivery]:
    """The rows still to write: per lead the newest, unless a newer call's fields are in."""
    newest: dict[int, Delivery] = {}
    for row in sorted(rows, key=_order):
        newest[int(_payload(row)["lead_id"])] = row
    keep = []
    for lead_id, row in newest.items():
        started, call_id = _order(row)
        if not app.store.newer_lead_write(lead_id, started, call_id):
            keep.append(row)
    dropped = [row for row in rows if row not in keep]
    if dropped:
        _close(app, dropped, now, sent=False, note="superseded by a newer call of the lead: not written")
    return keep


def _already_written(app: App, rows: list[Delivery], now: int) -> list[Delivery]:
    """The rows to send: those marked attempted whose lead already shows them are closed."""
    uncertain = [row for row in rows if _payload(row).get("attempted_at")]
    if not uncertain or app.crm is None:
        return rows
    leads = app.crm.leads(sorted({int(_payload(row)["lead_id"]) for row in uncertain}))
    date_field = app.config.amocrm.last_call_field_id
    landed = [
        row
        for row in uncertain
        if _shows(leads.get(int(_payload(row)["lead_id"])), _payload(row)["body"][0], date_field)
    ]
    if landed:
        _close(app, landed, now, sent=True, note="found written by an earlier attempt: not sent again")
    return [row for row in rows if row not in landed]


def _patch(app: App, rows: list[Delivery], now: int) -> None:
    assert app.crm is not None
    store = app.store

    def mark() -> None:
        with store.db.atomic():
            for row in rows:
                payload = _payload(row) | {"attempted_at": now}
                store.update_delivery(row, payload_json=json.dumps(payload, ensure_ascii=False))

    store.committed(mark)  # before the request leaves: a retry checks the lead first
    app.crm.patch(PATH, [_payload(row)["body"][0] for row in rows])
    _close(app, rows, now, sent=True, note="written to the lead")


def send(app: App, rows: Iterable[Delivery], now: int) -> None:
    """See the module contract."""
    rows = list(rows)
    if app.crm is None:
        for row in rows:
            _refused(app, row, now, PermanentError("amoCRM writes are not available in this setup"))
        return
    todo = _already_written(app, _superseded(app, rows, now), now)
    for start in range(0, len(todo), BATCH):
        batch = todo[start : start + BATCH]
        try:
            _patch(app, batch, now)
        except PermanentError as exc:
            if len(batch) > 1:  # one bad lead must not sink the others
                log.warning("amoCRM refused a batch of %d lead(s) (%s): sending them one by one", len(batch), exc)
                for row in batch:
                    _one(app, row, now)
            else:
                _refused(app, batch[0], now, exc)


def send_due(app: App, now: int) -> None:
    """See the module contract."""
    rows = [row for row in app.store.due_extras(now) if row.kind == KIND]
    if app.dry_run is not None:
        app.dry_run.show([delivery.as_planned(row) for row in rows])
        return
    if not rows:
        return
    try:
        send(app, rows, now)
    except (TransientError, FatalError) as exc:
        for row in rows:
            if row.done_at is None:
                delivery.put_off(app, row, now, exc)


def _one(app: App, row: Delivery, now: int) -> None:
    try:
        _patch(app, [row], now)
    except PermanentError as exc:
        _refused(app, row, now, exc)


def _refused(app: App, row: Delivery, now: int, exc: PermanentError) -> None:
    app.store.committed(partial(app.store.update_delivery, row, done_at=now, error=str(exc)))
    log.error("%s (%s) given up: %s", row.kind, row.key, exc)
