"""`[[trackers]]`: phrases tracked in every transcript, exactly, without a model request.

Contract: a `TrackerConfig` names a tracker (unique), its phrases (matched on lemmas, in
order, at most one word between; see `salesbot_poller.trackers`), whose words count
(`speaker`: the client's, the manager's, or anyone's; "any" as well when roles are unknown),
whether a hit is alerted at once (`alert`), and whether the tracker is EXPECTED (`expect`: the
card flags its absence). A profile's `trackers` lists the names it runs (None: all).

Refused, each with the tracker's position and key (and its name where it has one): no
phrases, a blank phrase, a phrase of only `STOP_WORDS` (it would match nearly every call), a
phrase longer than `MAX_PHRASE_WORDS` words or `MAX_PHRASE_CHARS` characters, more than
`MAX_PHRASES` phrases, more than `MAX_TRACKERS` trackers (checked before the trackers
themselves, so a huge list is one line at once), a name used twice (`tracker_problems`),
a profile naming a tracker that does not exist (`Config`). A phrase is text, never a
pattern: "*", "(", "?" are punctuation like any other and are ignored between words.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from salesbot_poller.config.values import _Section

TrackerSpeaker = Literal["client", "manager", "any"]
MAX_TRACKERS = 100
MAX_PHRASES = 100  # per tracker
MAX_PHRASE_WORDS = 12
MAX_PHRASE_CHARS = 200
# Words that say nothing on their own: a phrase made only of them would match nearly every call.
STOP_WORDS = frozenset(
    # Text, not a list literal: 66 one-word lines would hide the list.
    (  # noqa: SIM905
        "а б бы в во вот да для до ж же за и из или к как ко ли на не нет ни но ну о об обо от по "
        "с со так то у уж что чтобы это этот эта эти я ты он она оно мы вы они мне меня нас вас "
        "его ее их там тут ага угу ок окей"
    ).split()
)
_WORD = re.compile(r"\w+(?:-\w+)*")


def _named(info: ValidationInfo) -> str:
    name = info.data.get("name")
    return f' in tracker "{name}"' if name else ""


def _phrase(value: str, info: ValidationInfo) -> str:
    words = _WORD.findall(value.lower().replace("ё", "е"))
    if not words:
        raise ValueError(f"an empty phrase{_named(info)}: write the words to look for")
    if all(w in STOP_WORDS for w in words):
        raise ValueError(
            f'a phrase of only stop-words ("{value.strip()}"){_named(info)}: add a word that means something'
        )
    if len(value) > MAX_PHRASE_CHARS:
        raise ValueError(f"a phrase of {len(value)} characters{_named(info)}: at most {MAX_PHRASE_CHARS}")
    if len(words) > MAX_PHRASE_WORDS:
        raise ValueError(f"a phrase of {len(words)} words{_named(info)}: at most {MAX_PHRASE_WORDS}")
    return value


class TrackerConfig(_Section):
    name: str = Field(min_length=1, max_length=60, description="Shown on the card, in reports and in /tracker.")
    phrases: list[Annotated[str, AfterValidator(_phrase)]] = Field(
        description=(
            f"What counts as a hit: words in order, any word form, at most one other word between "
            f"({MAX_PHRASES} phrases of {MAX_PHRASE_WORDS} words at most)."
        )
    )
    speaker: TrackerSpeaker = Field("any", description="Whose words are searched: client, manager or any.")
    alert: bool = Field(False, description="A short message to the call's chat at once on a hit.")
    expect: bool = Field(False, description="The phrase must be said: the card flags its absence.")

    @field_validator("name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a blank name: give the tracker a name")
        return value

    @field_validator("phrases", mode="before")
    @classmethod
    def _how_many(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError(f"no phrases{_named(info)}: a tracker needs at least one")
            if len(value) > MAX_PHRASES:
                raise ValueError(f"{len(value)} phrases{_named(info)}: at most {MAX_PHRASES} per tracker")
        return value


def too_many_trackers(value: Any) -> Any:
    """`Config.trackers` before its items are validated: more than `MAX_TRACKERS` is refused
    at once, without validating (and reporting) each of them."""
    if isinstance(value, list) and len(value) > MAX_TRACKERS:
        raise ValueError(f"{len(value)} trackers: at most {MAX_TRACKERS}")
    return value


def tracker_problems(trackers: list[TrackerConfig]) -> list[tuple[tuple[int | str, ...], str]]:
    """(location under `trackers`, message) of each name used a second time."""
    seen: set[str] = set()
    found: list[tuple[tuple[int | str, ...], str]] = []
    for position, tracker in enumerate(trackers):
        key = tracker.name.strip().lower().replace("ё", "е")
        if key in seen:
            found.append(((position, "name"), f'"{tracker.name}" is used twice'))
        seen.add(key)
    return found
