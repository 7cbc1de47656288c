"""Trackers in a call's path: matched on the stored transcript, stored with it, alerted at once.

Contract:
- `find(config, matcher, profile, transcript)`: the hits of the trackers the call's profile
  runs (`profiles[].trackers`; None: every tracker) and the expected ones not said. A blank
  transcript has neither (no speech: nothing was "not said"). The live path (`stages.transcribe`)
  and `trackers --apply` (`reapply`) both call it: they find the same hits.
- `alert_item(app, call, hits)`: the alert (key `call:<id>:tracker`, kind `tracker_alert`) to
  the call's own chat when a tracker with `alert = true` has a hit, else None. It is stored in
  the transcript's transaction and sent by `send_alert` at once, before the analysis; its key
  makes it go once however often the stage runs. One that cannot go now (a busy or failing
  chat) goes with the call's other destinations once the card is out (`delivery.send_extras`).
- `reapply(store, config, matcher, start, end, out)`: the CURRENT trackers over the stored
  transcripts of calls in [start, end), a page at a time, each page's hits and the cursor
  (State `trackers_apply`) in one transaction; no alert. The cursor remembers the period
  and the trackers it was run for: the same run again continues after the last page; a
  finished one says so; another period or changed trackers start over.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence

from salesbot_poller.config import Config
from salesbot_poller.domain import Planned
from salesbot_poller.errors import TransientError
from salesbot_poller.pipeline import delivery, profiles
from salesbot_poller.pipeline.context import App, Cycle, call_context
from salesbot_poller.pipeline.routing import home
from salesbot_poller.pipeline.tracker_messages import render_alert
from salesbot_poller.store import Call, Store
from salesbot_poller.trackers import Hit, Matcher, utterances

log = logging.getLogger(__name__)

KIND = "tracker_alert"
STATE_KEY = "trackers_apply"
PAGE = 200


def alert_key(call_id: int) -> str:
    return f"call:{call_id}:tracker"


def find(config: Config, matcher: Matcher, profile: str | None, transcript: str) -> tuple[list[Hit], list[str]]:
    """See the module contract."""
    if not transcript.strip() or not config.trackers:
        return [], []
    names = profiles.by_name(config, profile).trackers
    hits = matcher.hits(utterances(transcript), names)
    return hits, matcher.missing(hits, names)


def alert_item(app: App, call: Call, hits: Sequence[Hit]) -> Planned | None:
    """See the module contract."""
    alerting = {tracker.name for tracker in app.config.trackers if tracker.alert}
    shown = [hit for hit in hits if hit.tracker in alerting]
    if not shown:
        return None
    parts = render_alert(call_context(app, call), shown, app.tz, app.config.telegram.mask_phones)
    return Planned(alert_key(call.id), KIND, home(app.config, call), {"parts": parts})


def send_alert(app: App, cycle: Cycle, call: Call, item: Planned | None) -> None:
    """Send the call's stored tracker alert now, if it has one not sent yet (a dry run prints
    `item` instead)."""
    if app.dry_run is not None:
        if item is not None:
            app.dry_run.show([item])
        return
    row = app.store.find_delivery(alert_key(call.id))
    if row is None or row.done_at is not None:
        return
    try:
        delivery.send(app, row, cycle.clock(), urgent=True)
    except TransientError as exc:  # it goes with the card's other destinations, retried on its own
        log.warning("call %d: tracker alert not sent now: %s; it is retried with the card", call.id, exc)


# --- `trackers --apply` ---------------------------------------------------------------------


def fingerprint(config: Config) -> str:
    """What the trackers and the profiles' choice of them say: changed, a re-apply starts over."""
    data = {
        "trackers": [t.model_dump() for t in config.trackers],
        "profiles": {p.name: p.trackers for p in config.profiles},
    }
    return hashlib.sha256(json.dumps(data, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16]


def reapply(
    store: Store,
    config: Config,
    matcher: Matcher,
    start: int,
    end: int,
    out: Callable[[str], None],
    should_stop: Callable[[], bool] = lambda: False,
) -> int | None:
    """See the module contract. Returns the calls matched now; None when the run was already
    finished (nothing to do)."""
    run = {"start": start, "end": end, "trackers": fingerprint(config)}
    saved = json.loads(store.get_state(STATE_KEY) or "{}")
    after = 0
    if all(saved.get(key) == value for key, value in run.items()):
        if saved.get("done"):
            return None
        after = int(saved.get("after", 0))
    total = store.count_transcribed_between(start, end)
    done_before = total - store.count_transcribed_between(start, end, after)  # by an interrupted run
    matched = 0
    while page := store.transcribed_between(start, end, after, PAGE):
        with store.db.atomic():  # a page's hits and the cursor past it: an interrupt loses nothing
            for call in page:
                hits, missing = find(config, matcher, call.profile, call.transcript or "")
                store.replace_trackers(call.id, hits, missing)
            after = page[-1].id
            store.set_state(STATE_KEY, json.dumps(run | {"after": after}))
        matched += len(page)
        out(f"trackers: {done_before + matched} of {total} call(s) (up to call {after})")
        if should_stop():
            return matched
    store.set_state(STATE_KEY, json.dumps(run | {"after": after, "done": True}))
    return matched
