"""``bioconv sleep-sim``: the single-layer Hebbian sleep dynamics of section 4 (paper Figs. 4A/4B/5A/5B)."""
from __future__ import annotations

import argparse

from ..sleep.dynamics import SleepSimConfig, run_sleep_sim
from .flags import add_setting_flags, settings_from_args


SETTINGS = {'sleep-sim': SleepSimConfig}  # the settings class of each command (docs/flags.md, tests)

def run(args: argparse.Namespace) -> int:
    run_sleep_sim(settings_from_args(args, SleepSimConfig))
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``sleep-sim`` (Figs. 4A/4B/5A/5B); the handler is stored as ``func``."""
    p = subparsers.add_parser('sleep-sim', help='single-layer Hebbian sleep dynamics (paper Figs. 4, 5)')
    add_setting_flags(p, SleepSimConfig)
    p.set_defaults(func=run)
    return p
