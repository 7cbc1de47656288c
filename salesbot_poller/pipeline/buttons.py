"""The card's inline buttons: their callback data (signed) and their keyboards.

Contract:
- Callback data is `<action>:<call id>:<arg>:<mac>`: `action` one letter (`ACTIONS`), `arg`
  the rubric position (`c`: play a quote), position and verdict letter (`s`: set, e.g.
  `3d`), or `0` (`e`: open the correction keyboard; `b`: back to the card's buttons). `mac`
  is HMAC-SHA256 over `<action>:<call id>:<arg>` with the install's key
  (`Store.callback_secret`), its first `MAC_BYTES` bytes in base64url without padding. Every
  button's data is at most `DATA_LIMIT` (64) bytes, Telegram's limit, for any call id up to
  2^63 and any position up to `MAX_ITEMS`.
- `read(data, secret)`: the `Tap` a button's data says, or None when it is not one of ours:
  malformed, an unknown action, or a MAC that does not match (forged, or made by another
  install, whose key differs). Compared in constant time.
- `card_keyboard(analysis, call_id, secret, clip_days)`: the card's buttons: one per rubric
  item whose quote was found in the transcript with its time (`verified` not False, `at`
  known, a verdict that counts), at most `MAX_QUOTES`, in rubric order, two a row
  ("▶️ Приветствие 00:04"), only when `clip_days` > 0; then one row "✏️ Исправить".
- `correction_keyboard(analysis, call_id, secret)`: one row per rubric item (at most
  `MAX_ITEMS`): "✅ <short title>", "◐", "❌", the verdict shown now marked "•"; then "Готово".
- `keyboard_part(parts)`: which part of a card carries the buttons: the last part that
  shows the rubric ("Скрипт"), so they sit under the items they correct; the last part of a
  card without a rubric.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from salesbot_poller.domain import VERDICT_VALUE, CallAnalysis, Keyboard
from salesbot_poller.services.quotes import clock

DATA_LIMIT = 64  # bytes: Telegram's limit on a button's callback_data
MAC_BYTES = 12  # 96 bits: a forgery must guess them; 16 characters of base64url
MAX_QUOTES = 6
MAX_ITEMS = 32  # rows of the correction keyboard (3 buttons each; Telegram allows 100 buttons)
ACTIONS = {"c": "clip", "e": "edit", "s": "set", "b": "back"}
VERDICT_LETTER = {"done": "d", "partly": "p", "missed": "m"}
LETTER_VERDICT = {letter: verdict for verdict, letter in VERDICT_LETTER.items()}
HUMAN_MARK = {"done": "✅", "partly": "◐", "missed": "❌"}
TITLE_CHARS = 18  # a button's title: two buttons a row still read on a phone
RUBRIC_HEAD = "<b>Скрипт</b>"


@dataclass(frozen=True)
class Tap:
    """What a pressed button asks: `action` (a value of `ACTIONS`), the call, the rubric
    position (None for `edit`/`back`) and, for `set`, the verdict."""

    action: str
    call_id: int
    position: int | None = None
    verdict: str | None = None


def _mac(secret: bytes, signed: str) -> str:
    digest = hmac.new(secret, signed.encode("ascii"), hashlib.sha256).digest()[:MAC_BYTES]
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def data(secret: bytes, action: str, call_id: int, arg: str = "0") -> str:
    """A button's callback data (see the module contract); `action` a key of `ACTIONS`."""
    signed = f"{action}:{call_id}:{arg}"
    return f"{signed}:{_mac(secret, signed)}"


def read(raw: str, secret: bytes) -> Tap | None:
    """See the module contract."""
    pieces = raw.split(":")
    if len(pieces) != 4 or len(raw.encode("utf-8")) > DATA_LIMIT:
        return None
    action, call_id, arg, mac = pieces
    signed = f"{action}:{call_id}:{arg}"
    if not signed.isascii() or not hmac.compare_digest(mac.encode("ascii", "replace"), _mac(secret, signed).encode()):
        return None
    if action not in ACTIONS or not call_id.isdigit():
        return None
    if action == "c" and arg.isdigit():
        return Tap("clip", int(call_id), int(arg))
    if action == "s" and len(arg) >= 2 and arg[:-1].isdigit() and arg[-1] in LETTER_VERDICT:
        return Tap("set", int(call_id), int(arg[:-1]), LETTER_VERDICT[arg[-1]])
    if action in ("e", "b") and arg == "0":
        return Tap(ACTIONS[action], int(call_id))
    return None


def _short(title: str) -> str:
    title = " ".join(title.split())
    return title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1].rstrip() + "…"


def quotes(analysis: CallAnalysis) -> list[int]:
    """The rubric positions whose quote can be heard (see `card_keyboard`), at most `MAX_QUOTES`."""
    found = [
        position
        for position, item in enumerate(analysis.rubric)
        if item.evidence.strip()
        and item.verified is not False
        and item.at is not None
        and item.verdict in VERDICT_VALUE
    ]
    return found[:MAX_QUOTES]


def card_keyboard(analysis: CallAnalysis, call_id: int, secret: bytes, clip_days: int) -> Keyboard:
    """See the module contract."""
    rows: Keyboard = []
    if clip_days > 0:
        buttons = []
        for position in quotes(analysis):
            item = analysis.rubric[position]
            buttons.append((f"▶️ {_short(item.title)} {clock(item.at or 0)}", data(secret, "c", call_id, str(position))))
        rows += [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    if analysis.rubric:
        rows.append([("✏️ Исправить", data(secret, "e", call_id))])
    return rows


def correction_keyboard(analysis: CallAnalysis, call_id: int, secret: bytes) -> Keyboard:
    """See the module contract. `analysis`: as shown (the human verdicts in place)."""
    rows: Keyboard = []
    for position, item in enumerate(analysis.rubric[:MAX_ITEMS]):
        row = []
        for verdict, letter in VERDICT_LETTER.items():
            text = HUMAN_MARK[verdict] + (f" {_short(item.title)}" if verdict == "done" else "")
            if item.verdict == verdict:
                text = f"• {text}"
            row.append((text, data(secret, "s", call_id, f"{position}{letter}")))
        rows.append(row)
    rows.append([("Готово", data(secret, "b", call_id))])
    return rows


def keyboard_part(parts: list[str]) -> int:
    """See the module contract."""
    showing = [index for index, part in enumerate(parts) if RUBRIC_HEAD in part]
    return showing[-1] if showing else max(0, len(parts) - 1)
