"""`salesbot-poller demo`: the sandbox demos, no config and no network: one real poll cycle
(`demo_cycle`), with --weekly the weekly team report on eight weeks of demo calls
(`demo_weekly`), with --serve the sandboxes and the daemon until Ctrl-C (`demo_serve`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from salesbot_poller.config import Config


def run(args: argparse.Namespace, config: Config | None) -> int:
    """`demo` (`demo_cycle.run_demo`), `demo --weekly [--chart FILE]` (`demo_weekly`),
    `demo --serve [--dir DIR]` (`demo_serve`)."""
    if args.serve:
        from salesbot_poller.cli.demo_serve import run_serve

        return run_serve(Path(args.dir), lambda line: print(line, flush=True))
    if args.weekly:
        from salesbot_poller.cli.demo_weekly import run_weekly_demo

        return run_weekly_demo(print, Path(args.chart) if args.chart else None)
    from salesbot_poller.cli.demo_cycle import run_demo

    return run_demo(print)
