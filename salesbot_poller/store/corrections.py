"""People's corrections of the model's verdicts, and the bot's button presses: a mixin of `Store`.

Contract:
- `correct_verdict(call, item_id, position, verdict, by, by_id, now)` stores a person's verdict
  on one rubric item of `call` (one row per call and item: a later tap replaces it) and, in
  the same transaction, the call's BI rows (`bi.apply_corrections`). The model's verdict in
  `analysis_json` is never touched. False when the item already had that human verdict
  (a double tap): nothing is written.
- `corrections(call_id)`: the call's corrections by item id (`VerdictCorrection` rows).
  `corrected_between(start, end)`: the corrections made in [start, end), oldest first (the
  weekly report's agreement line, `eval --corrections`).
- `correction_checks(start, end)`: for each correction made in [start, end), the item's
  title, the model's verdict and the person's (`bi_rubric_item` beside `verdict_correction`),
  in the order made; a correction whose item is not in the BI tables is left out.
- `card_messages(call_id)`: the message ids of each delivered copy of the call's card (its
  own and the alert chat's), part by part.
- `lead_writes(call_id)`: the call's lead-field rows (`amo_fields`), in the order stored.
- `take_callback(callback_id, now)`: records a button press before it is acted on; False
  when it was recorded already (Telegram sent it again, or the process restarted after
  storing it): the caller then does nothing. Presses older than `KEEP_PRESSES` seconds are
  deleted on the way (Telegram gives up on a press within minutes).
- `callback_secret()`: the install's key for the buttons' MAC (`pipeline.buttons`): 32 random
  bytes made once (`secrets.token_bytes`) and kept in the state table; two processes making
  it at once agree on the first one stored. Never logged.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterable
from typing import cast

from salesbot_poller.store import bi
from salesbot_poller.store.base import StoreBase
from salesbot_poller.store.models import BiRubricItem, Call, Delivery, HandledCallback, State, VerdictCorrection

CALLBACK_SECRET_KEY = "callback_secret"
KEEP_PRESSES = 7 * 24 * 3600


class Corrections(StoreBase):
    """Corrections and button presses: a mixin of `Store`."""

    def correct_verdict(
        self, call: Call, item_id: str, position: int, verdict: str, by: str, by_id: int, now: int
    ) -> bool:
        """See the module contract."""
        with self.db.atomic():
            current = VerdictCorrection.get_or_none(
                VerdictCorrection.call_id == call.id, VerdictCorrection.item_id == item_id
            )
            if current is not None and current.verdict == verdict:
                return False
            row = {
                "position": position,
                "verdict": verdict,
                "corrected_by": by,
                "corrected_by_id": by_id,
                "corrected_at": now,
            }
            VerdictCorrection.insert(call_id=call.id, item_id=item_id, **row).on_conflict(
                conflict_target=[VerdictCorrection.call_id, VerdictCorrection.item_id], update=row
            ).execute()
            bi.apply_corrections(call)
        return True

    def corrections(self, call_id: int) -> dict[str, VerdictCorrection]:
        """See the module contract."""
        rows = VerdictCorrection.select().where(VerdictCorrection.call_id == call_id)
        return {str(row.item_id): row for row in rows}

    def corrected_between(self, start: int, end: int) -> list[VerdictCorrection]:
        """See the module contract."""
        query = VerdictCorrection.select().where(
            VerdictCorrection.corrected_at >= start, VerdictCorrection.corrected_at < end
        )
        return list(query.order_by(VerdictCorrection.corrected_at, VerdictCorrection.id))

    def correction_checks(self, start: int, end: int) -> list[tuple[str, str, str]]:
        """See the module contract."""
        query = (
            VerdictCorrection.select(BiRubricItem.title, BiRubricItem.verdict, VerdictCorrection.verdict.alias("human"))
            .join(
                BiRubricItem,
                on=(BiRubricItem.call_id == VerdictCorrection.call_id)
                & (BiRubricItem.item_id == VerdictCorrection.item_id),
            )
            .where(VerdictCorrection.corrected_at >= start, VerdictCorrection.corrected_at < end)
            .order_by(VerdictCorrection.corrected_at, VerdictCorrection.id)
        )
        rows = cast(Iterable[tuple[str, str, str]], query.tuples())  # .tuples() rows, not models
        return [(str(title), str(model), str(human)) for title, model, human in rows]

    def card_messages(self, call_id: int) -> list[list[int]]:
        """See the module contract."""
        query = Delivery.select(Delivery.sent_ids_json).where(
            Delivery.call_id == call_id, Delivery.kind.in_(["card", "card_alert"])
        )
        return [[int(i) for i in json.loads(row.sent_ids_json)] for row in query.order_by(Delivery.id)]

    def lead_writes(self, call_id: int) -> list[Delivery]:
        """See the module contract."""
        query = Delivery.select().where(Delivery.call_id == call_id, Delivery.kind == "amo_fields")
        return list(query.order_by(Delivery.id))

    def take_callback(self, callback_id: str, now: int) -> bool:
        """See the module contract."""
        with self.db.atomic():
            HandledCallback.delete().where(HandledCallback.at < now - KEEP_PRESSES).execute()
            # The row count says whether it went in, on SQLite and PostgreSQL alike.
            inserted = HandledCallback.insert(callback_id=callback_id, at=now).on_conflict_ignore().as_rowcount()
            return bool(inserted.execute())

    def callback_secret(self) -> bytes:
        """See the module contract."""
        stored = self.get_state(CALLBACK_SECRET_KEY)
        if stored is None:
            fresh = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
            State.insert(key=CALLBACK_SECRET_KEY, value=fresh).on_conflict_ignore().execute()
            stored = self.get_state(CALLBACK_SECRET_KEY) or fresh
        return base64.b64decode(stored)
