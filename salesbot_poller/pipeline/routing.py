"""Where each message of a call goes, as a plan (`domain.Planned`) fixed before anything is sent.

Contract of `plan_call(...)`: the first item is the call's own message (key `call:<id>`): the
analysis card, or the missed-call alert, to the chat of the call's profile (`profiles[].chat_id`,
with its topic) when it has one, else to the chat of the call's responsible user from
`telegram.routes` (with its forum topic), else to the default chat (`to=None`). Then:
- a card scoring below the profile's `alert_below_score` (by default `telegram.alert_below_score`)
  is also sent to the alert chat
  (`telegram.alert_chat_id`, default `telegram.chat_id`) unless that is where it went already;
- with `telegram.attach_transcript`, the transcript as a .txt document to every chat that got
  the card, as a reply to the card there;
- with `amocrm.write_back`, the note (and with `amocrm.create_tasks`, the task): see `writeback`;
- with `amocrm.score_field_id`, `last_call_field_id` or `tag_low_score`, the lead's fields
  and tag: see `lead_fields`.
With `keyboard` (the card's buttons, `pipeline.buttons`), the card's payload says which part
carries them (`keyboard_part`: the last part showing the rubric); its copy to the alert chat
has them too. Phone numbers in the card, the alert and the caption follow `telegram.mask_phones`
(`messages.masked`); the transcript document itself is the call as heard, unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import tzinfo
from typing import Any

from salesbot_poller.config import Config
from salesbot_poller.domain import CallAnalysis, CallContext, Destination, Keyboard, Planned
from salesbot_poller.pipeline import lead_fields, profiles
from salesbot_poller.pipeline.buttons import keyboard_part
from salesbot_poller.pipeline.messages import render_conversation, render_missed, render_transcript_caption
from salesbot_poller.pipeline.writeback import plan_writes
from salesbot_poller.store import Call


def route(config: Config, user_id: int | None) -> Destination | None:
    """The chat of `user_id` from `telegram.routes`; None means the default chat."""
    target = config.telegram.routes.get(user_id) if user_id is not None else None
    return Destination(target.chat_id, target.message_thread_id) if target else None


def home(config: Config, call: Call) -> Destination | None:
    """Where the call's card goes: its profile's chat, else its manager's route; None means
    the default chat. Whatever else is posted about the call goes there too."""
    return profiles.destination(profiles.by_name(config, call.profile)) or route(config, call.responsible_user_id)


def alert_destination(config: Config) -> Destination | None:
    """The alert chat and topic; None means the default chat."""
    telegram = config.telegram
    topic = telegram.alert_message_thread_id or None
    if not telegram.alert_chat_id and topic is None:
        return None
    return Destination(telegram.alert_chat_id or telegram.chat_id, topic)


def _same(a: Destination | None, b: Destination | None, default_chat: str) -> bool:
    return (a or Destination(default_chat)) == (b or Destination(default_chat))


def _where(to: Destination | None) -> str:
    return "default" if to is None else f"{to.chat_id}:{to.thread_id or 0}"


def plan_call(
    config: Config,
    call: Call,
    ctx: CallContext,
    analysis: CallAnalysis | None,
    tz: tzinfo | None,
    metrics: str | None = None,
    trackers: Sequence[str] = (),
    keyboard: Keyboard | None = None,
    corrected: Mapping[str, str] | None = None,
) -> list[Planned]:
    """See the module contract. `analysis` is None for a missed call; `trackers`: the card's
    tracker lines (`tracker_messages.card_lines`); `corrected`: the items people corrected
    (`messages.render_conversation`), when `analysis` holds their verdicts."""
    profile = profiles.by_name(config, call.profile)
    dest = home(config, call)
    own = f"call:{call.id}"
    mask = config.telegram.mask_phones
    if analysis is None:
        return [Planned(own, "alert", dest, {"parts": render_missed(ctx, tz, mask)})]
    parts = render_conversation(ctx, analysis, tz, metrics, mask, trackers, corrected)
    card: dict[str, Any] = {"parts": parts}
    if keyboard:
        card |= {"keyboard": keyboard, "keyboard_part": keyboard_part(parts)}
    plans = [Planned(own, "card", dest, card)]
    cards: list[tuple[Destination | None, str]] = [(dest, own)]
    threshold = profiles.alert_below(profile, config)
    alert = alert_destination(config)
    if analysis.score is not None and analysis.score < threshold and not _same(alert, dest, config.telegram.chat_id):
        key = f"call:{call.id}:card:{_where(alert)}"
        plans.append(Planned(key, "card_alert", alert, card))
        cards.append((alert, key))
    if config.telegram.attach_transcript and call.transcript:
        caption = render_transcript_caption(ctx, tz, mask)
        for to, card_key in cards:
            document = {"filename": f"call-{call.id}-transcript.txt", "caption": caption, "text": call.transcript}
            plans.append(Planned(f"call:{call.id}:transcript:{_where(to)}", "transcript", to, document, card_key))
    if config.amocrm.write_back:
        plans.extend(plan_writes(config, call, analysis, tz))
    plans.extend(lead_fields.plan(config, call, analysis))
    return plans
