"""Reading what the store holds about a call's own message (its `call:<id>` delivery row)."""

from __future__ import annotations

import json

from salesbot_poller.store import Call, Delivery


def own_row(call: Call) -> Delivery | None:
    return Delivery.get_or_none(Delivery.key == f"call:{call.id}")


def own_ids(call: Call) -> list[int]:
    """The message ids Telegram accepted for the call's own card or alert, in order."""
    row = own_row(call)
    return [int(i) for i in json.loads(row.sent_ids_json)] if row else []


def own_parts(call: Call) -> list[str]:
    """The rendered parts of the call's own card or alert."""
    row = own_row(call)
    return [str(p) for p in json.loads(row.payload_json)["parts"]] if row else []
