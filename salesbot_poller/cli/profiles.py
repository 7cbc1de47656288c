"""`salesbot-poller profiles` and the profile part of `check`.

Contract:
- `directory_lines(directory)`: the account's pipelines with their statuses, user groups and
  users (with their group), each with its id, as text to fill `[[profiles]]` from.
- `profile_problems(config, directory)`: one line per id in a profile that the account does
  not have, naming the profile as `profiles[N]` (counted from 1, as the `[[profiles]]` tables
  stand in the file) and listing the ids it does have:
  "profiles[1].pipelines: 999 is not a pipeline of this account; pipelines: 1234567 «Продажи», ...".
  A status must belong to one of the profile's pipelines when it names any.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from salesbot_poller.cli.common import EXIT_OK, redacting_out, utc_now
from salesbot_poller.config import Config
from salesbot_poller.services.amocrm import Directory
from salesbot_poller.store import Store

LISTED = 8  # ids listed after a problem; more are "..."


def group_names(directory: Directory) -> dict[int, str]:
    """Groups by id: the account's list, plus groups only seen on users."""
    names = dict(directory.groups)
    for _, _, group in directory.users:
        if group is not None and group not in names:
            names[group] = "основная группа" if group == 0 else f"группа {group}"
    return names


def directory_lines(directory: Directory) -> list[str]:
    lines = [f"pipelines ({len(directory.pipelines)}): [[profiles]] pipelines = [id, ...], statuses = [id, ...]"]
    for pipeline in directory.pipelines:
        lines.append(f"  {pipeline.id}  «{pipeline.name}»")
        lines.extend(f"      status {sid}  «{name}»" for sid, name in pipeline.statuses)
    groups = group_names(directory)
    lines.append(f"user groups ({len(groups)}): groups = [id, ...]")
    lines.extend(f"  {gid}  «{name}»" for gid, name in sorted(groups.items()))
    lines.append(f"users ({len(directory.users)}): users = [id, ...]")
    for uid, name, group in directory.users:
        in_group = f", group {group} «{groups.get(group, '')}»" if group is not None else ""
        lines.append(f"  {uid}  {name}{in_group}")
    if not directory.users:
        lines.append("  (none listed: the users list needs an admin's token)")
    return lines


def _listing(kind: str, known: Iterable[tuple[int, str]]) -> str:
    items = list(known)
    shown = ", ".join(f"{i} «{n}»" for i, n in items[:LISTED]) + (", ..." if len(items) > LISTED else "")
    return f"{kind}: {shown}" if items else f"this account has no {kind}"


def profile_problems(config: Config, directory: Directory) -> list[str]:
    """See the module contract."""
    problems: list[str] = []
    pipelines = {p.id: p for p in directory.pipelines}
    groups = group_names(directory)
    users = {uid: name for uid, name, _ in directory.users}
    for number, profile in enumerate(config.profiles, 1):
        where = f"profiles[{number}]"
        for pid in profile.pipelines:
            if pid not in pipelines:
                listing = _listing("pipelines", ((p.id, p.name) for p in directory.pipelines))
                problems.append(f"{where}.pipelines: {pid} is not a pipeline of this account; {listing}")
        scope = [pipelines[p] for p in profile.pipelines if p in pipelines] or list(directory.pipelines)
        statuses = {sid: name for p in scope for sid, name in p.statuses}
        for sid in profile.statuses:
            if sid not in statuses:
                of = "of its pipelines" if profile.pipelines else "of this account"
                problems.append(
                    f"{where}.statuses: {sid} is not a status {of}; {_listing('statuses', statuses.items())}"
                )
        for gid in profile.groups:
            if gid not in groups:
                problems.append(
                    f"{where}.groups: {gid} is not a user group of this account; {_listing('groups', groups.items())}"
                )
        if users:  # a non-admin token lists none: nothing to compare with
            for uid in profile.users:
                if uid not in users:
                    problems.append(
                        f"{where}.users: {uid} is not a user of this account; {_listing('users', users.items())}"
                    )
    return problems


def run(args: argparse.Namespace, config: Config | None) -> int:
    """`profiles`: `directory_lines` of the account."""
    from salesbot_poller.app import build_amo  # the service clients: only for this command

    assert config is not None  # loaded by `cli.main`
    store = Store.open(config.storage.database, int(utc_now().timestamp()))
    try:
        out = redacting_out(config)
        for line in directory_lines(build_amo(config, store, utc_now).directory()):
            out(line)
        return EXIT_OK
    finally:
        store.close()
