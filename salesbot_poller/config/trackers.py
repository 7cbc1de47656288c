"""`[[trackers]]`: phrases tracked in every transcript, exactly, without a model request.

Contract: a `TrackerConfig` names a tracker (unique), its phrases (matched on lemmas, in
order, at most one word between; see `salesbot_poller.trackers`), whose words count
(`speaker`: the client's, the manager's, or anyone's; "any" as well when roles are unknown),
whether a hit is alerted at once (`alert`), and whether the tracker is EXPECTED (`expect`: the
card flags its absence). A profile's `trackers` lists the names it runs (None: all).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from salesbot_poller.config.values import _Section

TrackerSpeaker = Literal["client", "manager", "any"]


class TrackerConfig(_Section):
    name: str = Field(min_length=1, max_length=60, description="Shown on the card, in reports and in /tracker.")
    phrases: list[str] = Field(description="What counts as a hit: words in order, any word form.")
    speaker: TrackerSpeaker = Field("any", description="Whose words are searched: client, manager or any.")
    alert: bool = Field(False, description="A short message to the call's chat at once on a hit.")
    expect: bool = Field(False, description="The phrase must be said: the card flags its absence.")
