"""Call profiles: which profile a call gets, and what that profile's settings are.

Contract:
- `effective(config)`: the `[[profiles]]` in order, or, with none, one implicit profile named
  "" made of the top-level settings (`poller.min_duration_seconds`, `[analysis]`,
  `[telegram]`) that matches every call: a config without profiles behaves as before.
- `match(config, facts)` returns the call's profile, or None and the reason it is skipped:
  - a number in `poller.exclude_phones` (compared by `phones.key`, so `8 (916) 123-45-67`
    there excludes a call noted as `79161234567`): "excluded number";
  - the first profile whose filters all hold (an empty list holds for anything): entity
    type, pipeline and status (of the call's lead: a profile naming pipelines or statuses
    never matches a call on a contact or a company), the manager's user id and group,
    direction, telephony source (`params.source`, case-insensitive);
  - none: "no profile";
  - the durations are the matched profile's rules, not filters (`min_duration_seconds`
    overrides `poller.min_duration_seconds`, as the issue says): an answered call outside
    them is skipped, "too short (15 s < 20 s, profile «Опт»)" / "too long (…)", and never
    handed to a later profile (a short wholesale call is not the retail team's);
  - a missed call: its profile's `missed_calls = false` skips it ("missed-call alerts off
    in profile «…»").
- `needs_lead(config)` / `needs_groups(config)`: whether any profile filters by the lead's
  pipeline or status / by user group, so those are read only when asked for.
- `profile_conflicts(config)`: what `check` fails on, one line each: a profile whose minimum
  duration (its own or `poller.min_duration_seconds`) is over its maximum (every answered
  call it takes is skipped), and a profile that is never chosen because every call its
  filters hold for is taken by an earlier one (`covers`: filter by filter, a subset).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from salesbot_poller.config import ENTITY_TYPES, Config, Profile, RubricItem
from salesbot_poller.domain import Destination
from salesbot_poller.phones import key


@dataclass(frozen=True)
class CallFacts:
    """What a profile can filter on, read from the event, its note, the lead and the users."""

    entity_type: str  # plural, as amoCRM's paths
    direction: str
    duration: int
    answered: bool
    phone: str | None = None
    source: str | None = None
    user_id: int | None = None
    group_id: int | None = None
    pipeline_id: int | None = None
    status_id: int | None = None


def implicit(config: Config) -> Profile:
    """The profile a config without `[[profiles]]` means: every call, the top-level settings."""
    return Profile.model_construct(
        name="",
        entities=list(ENTITY_TYPES),  # not looked at: the implicit profile matches every call
        pipelines=[],
        statuses=[],
        users=[],
        groups=[],
        directions=["in", "out"],
        min_duration_seconds=config.poller.min_duration_seconds,
        max_duration_seconds=0,
        sources=[],
        missed_calls=True,
        prompt_file="",
        rubric=(),
        rubric_file="",
        chat_id="",
        message_thread_id=None,
        alert_below_score=None,
        topics=None,
    )


def effective(config: Config) -> list[Profile]:
    return list(config.profiles) or [implicit(config)]


def needs_lead(config: Config) -> bool:
    return any(p.pipelines or p.statuses for p in config.profiles)


def needs_groups(config: Config) -> bool:
    return any(p.groups for p in config.profiles)


def _filters_hold(profile: Profile, facts: CallFacts) -> bool:
    sources = {s.lower() for s in profile.sources}
    return (
        facts.entity_type in profile.entities
        and (not profile.pipelines or facts.pipeline_id in profile.pipelines)
        and (not profile.statuses or facts.status_id in profile.statuses)
        and (not profile.users or facts.user_id in profile.users)
        and (not profile.groups or facts.group_id in profile.groups)
        and facts.direction in profile.directions
        and (not sources or (facts.source or "").lower() in sources)
    )


def min_duration(profile: Profile, config: Config) -> int:
    if profile.min_duration_seconds is None:
        return config.poller.min_duration_seconds
    return profile.min_duration_seconds


def _duration_problem(profile: Profile, config: Config, duration: int) -> str | None:
    low, high = min_duration(profile, config), profile.max_duration_seconds
    of = f", profile «{profile.name}»" if profile.name else ""
    if duration < low:
        return f"too short ({duration} s < {low} s{of})"
    if high and duration > high:
        return f"too long ({duration} s > {high} s{of})"
    return None


def match(config: Config, facts: CallFacts) -> tuple[Profile | None, str | None]:
    """See the module contract."""
    excluded = {key(p) for p in config.poller.exclude_phones} - {""}
    if facts.phone and key(facts.phone) in excluded:
        return None, "excluded number (poller.exclude_phones)"
    for profile in effective(config):
        if config.profiles and not _filters_hold(profile, facts):
            continue
        if not facts.answered:
            if not profile.missed_calls:
                return None, f"missed-call alerts off in profile «{profile.name}»"
            return profile, None
        problem = _duration_problem(profile, config, facts.duration)
        return (None, problem) if problem else (profile, None)
    return None, "no profile"


def by_name(config: Config, name: str | None) -> Profile:
    """The profile a call was given; the implicit one for "" or a profile no longer configured
    (the call keeps its name; its settings fall back to the top-level ones)."""
    for profile in config.profiles:
        if profile.name == name:
            return profile
    return implicit(config)


def rubric(profile: Profile, config: Config) -> tuple[RubricItem, ...]:
    return profile.rubric or config.analysis.rubric


def topics(profile: Profile, config: Config) -> list[str]:
    """The closed topic list of the profile's calls: its own when it sets one ([] frees it)."""
    return config.analysis.topics if profile.topics is None else profile.topics


def prompt_file(profile: Profile, config: Config) -> str:
    return profile.prompt_file or config.analysis.prompt_file


def destination(profile: Profile) -> Destination | None:
    """The profile's chat, None when it has none (then `telegram.routes` / `chat_id`)."""
    return Destination(profile.chat_id, profile.message_thread_id) if profile.chat_id else None


def alert_below(profile: Profile, config: Config) -> int:
    if profile.alert_below_score is None:
        return config.telegram.alert_below_score
    return profile.alert_below_score


def _entities(profile: Profile) -> set[str]:
    """The entity types a profile can take: a profile naming pipelines or statuses takes
    calls on leads only (a call on a contact or a company has neither)."""
    return {str(e) for e in profile.entities} & ({"leads"} if profile.needs_lead else set(ENTITY_TYPES))


def _within(first: Sequence[object], then: Sequence[object]) -> bool:
    """Whether a filter `then` holds only where `first` holds (an empty list holds for anything)."""
    return not first or (bool(then) and set(then) <= set(first))


def covers(earlier: Profile, later: Profile) -> bool:
    """Whether every call `later`'s filters hold for, `earlier`'s hold for too: then `match`
    never gets to `later` (the durations are rules, not filters: a call outside `earlier`'s
    is skipped, not handed on)."""
    return (
        _entities(later) <= set(earlier.entities)
        and _within(earlier.pipelines, later.pipelines)
        and _within(earlier.statuses, later.statuses)
        and _within(earlier.users, later.users)
        and _within(earlier.groups, later.groups)
        and set(later.directions) <= set(earlier.directions)
        and _within([s.lower() for s in earlier.sources], [s.lower() for s in later.sources])
    )


def _never_chosen(profiles: Sequence[Profile], number: int) -> str | None:
    profile = profiles[number]
    if not _entities(profile) or not profile.directions:
        return "is never chosen: it takes no call (its entities or directions leave none)"
    for index, earlier in enumerate(profiles[:number]):
        if covers(earlier, profile):
            return (
                f"is never chosen: every call it takes matches profiles[{index + 1}] «{earlier.name}» first "
                f"(profiles are tried in order: move it up, or narrow «{earlier.name}»)"
            )
    return None


def profile_conflicts(config: Config) -> list[str]:
    """See the module contract."""
    problems = []
    profiles = config.profiles
    for number, profile in enumerate(profiles):
        label = f"profiles[{number + 1}] «{profile.name}»"
        low, high = min_duration(profile, config), profile.max_duration_seconds
        if high and low > high:
            own = profile.min_duration_seconds is not None
            source = "min_duration_seconds" if own else "poller.min_duration_seconds (not overridden)"
            problems.append(
                f"{label}: {source} {low} s is over max_duration_seconds {high} s: "
                "every answered call it takes is skipped"
            )
        never = _never_chosen(profiles, number)
        if never:
            problems.append(f"{label} {never}")
    return problems
