"""A call's card as people corrected it: its verdicts, score, buttons, and the amoCRM score.

Contract:
- `shown(app, call, analysis)`: the analysis with the people's verdicts in place of the
  model's and the score recomputed (`domain.with_corrections`), and who corrected which item
  (item id -> name). The stored analysis is never changed.
- `buttons_on(app)`: whether cards get buttons: only when the bot reads its updates
  (`App.updates`: `telegram.command_chats` and `telegram.admins`), so a button is never
  shown that nobody would answer.
- `card(app, call)`: the card's parts as shown now (`shown`), which part carries the buttons
  (`buttons.keyboard_part`), and the card's buttons (`buttons.card_keyboard`, with
  `storage.clip_days`); None when the call has no readable analysis. The same inputs as the
  card the call was first sent with (`stages.plan`), so an edit changes only what people
  corrected.
- `write_score(app, call, now)`: after a correction, with `amocrm.score_field_id` (or the
  other lead fields) set, plans the lead's fields again (`lead_fields.plan`) under a key of
  its own (`call:<id>:amo_fields:fix<n>`), sent by the intake lane like any lead write —
  only when the score differs from the one last written (or waiting to be written) for this
  call. Returns whether it planned one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from salesbot_poller.domain import CallAnalysis, Keyboard, Planned, with_corrections
from salesbot_poller.pipeline import buttons, lead_fields
from salesbot_poller.pipeline.context import App, call_context
from salesbot_poller.pipeline.messages import render_conversation
from salesbot_poller.pipeline.tracker_messages import card_lines
from salesbot_poller.store import Call


@dataclass(frozen=True)
class Card:
    """A card as shown now: its parts, the index of the part with the buttons, its buttons,
    and its analysis as shown (the human verdicts in place)."""

    parts: list[str]
    keyboard_part: int
    keyboard: Keyboard
    analysis: CallAnalysis


def shown(app: App, call: Call, analysis: CallAnalysis) -> tuple[CallAnalysis, dict[str, str]]:
    """See the module contract."""
    fixes = app.store.corrections(call.id)
    if not fixes:
        return analysis, {}
    verdicts = {item_id: str(fix.verdict) for item_id, fix in fixes.items()}
    present = {item.item_id for item in analysis.rubric}
    names = {item_id: str(fix.corrected_by) for item_id, fix in fixes.items() if item_id in present}
    return with_corrections(analysis, verdicts), names


def buttons_on(app: App) -> bool:
    """See the module contract."""
    return app.updates is not None


def read_analysis(call: Call) -> CallAnalysis | None:
    """The call's stored analysis; None when it has none or it cannot be read."""
    if not call.analysis_json or call.kind == "missed":
        return None
    try:
        return CallAnalysis.model_validate_json(call.analysis_json)
    except ValueError:
        return None


def card(app: App, call: Call) -> Card | None:
    """See the module contract."""
    analysis = read_analysis(call)
    if analysis is None:
        return None
    view, names = shown(app, call, analysis)
    hits, missing = app.store.call_trackers(call.id)
    ctx = call_context(app, call)
    parts = render_conversation(
        ctx, view, app.tz, None, app.config.telegram.mask_phones, card_lines(hits, missing), names
    )
    secret = app.store.callback_secret()
    keyboard = buttons.card_keyboard(view, call.id, secret, app.config.storage.clip_days)
    return Card(parts, buttons.keyboard_part(parts), keyboard, view)


def _score(payload: dict[str, object], field_id: int) -> object:
    for lead in payload.get("body") or []:  # type: ignore[attr-defined]
        for value in lead.get("custom_fields_values") or []:
            if value.get("field_id") == field_id:
                return value["values"][0]["value"]
    return None


def write_score(app: App, call: Call, now: int) -> bool:
    """See the module contract."""
    analysis = read_analysis(call)
    if analysis is None:
        return False
    view, _ = shown(app, call, analysis)
    plan = lead_fields.plan(app.config, call, view)
    if not plan:
        return False
    field_id = app.config.amocrm.score_field_id
    rows = app.store.lead_writes(call.id)
    kept = [row for row in rows if row.done_at is None or row.sent_ids_json != "[]"]
    wanted = _score(plan[0].payload, field_id)
    if kept and _score(json.loads(kept[-1].payload_json), field_id) == wanted:
        return False
    item = plan[0]
    fix = Planned(f"{item.key}:fix{len(rows)}", item.kind, item.to, item.payload, item.reply_to_key)
    app.store.enqueue([fix], call.id, now)
    return True
