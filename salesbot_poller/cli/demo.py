"""`salesbot-poller demo`: the sandbox demos, no config and no network: one real poll cycle
(`demo_cycle`), or with --weekly the weekly team report on eight weeks of demo calls
(`demo_weekly`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from salesbot_poller.config import Config


def run(args: argparse.Namespace, config: Config | None) -> int:
    """`demo` (`demo_cycle.run_demo`), `demo --weekly [--chart FILE]` (`demo_weekly`)."""
    if args.weekly:
        from salesbot_poller.cli.demo_weekly import run_weekly_demo

        return run_weekly_demo(print, Path(args.chart) if args.chart else None)
    from salesbot_poller.cli.demo_cycle import run_demo

    return run_demo(print)
