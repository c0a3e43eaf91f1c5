"""Command-line arguments the evaluation CLIs share: one flag, default and help text each."""

from __future__ import annotations

import argparse
from pathlib import Path

from defvos_core.config import PresenceConfig, TrackerConfig
from defvos_core.config_io import load_config
from defvos_core.data.roots import DATA_ENV, DAVIS_NAME


def add_sequence_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --weights, --data and --split (the weights and the DAVIS sequences to score)."""
    parser.add_argument("--weights", default=None, help="weights file (default: shipped)")
    parser.add_argument("--data", type=Path, default=None,
                        help=f"DAVIS-layout folder (default: ${DATA_ENV}/{DAVIS_NAME})")
    parser.add_argument("--split", default="val",
                        help="sequences: val, train, fold0..fold4, or an ImageSets file")


def add_presence_argument(parser: argparse.ArgumentParser) -> None:
    """Add --presence-drop: `PresenceConfig.confidence_drop` of the tracker."""
    parser.add_argument("--presence-drop", type=float,
                        default=PresenceConfig.confidence_drop,
                        help="the tracker's presence rule: absent when the score drops this "
                        "far below its recent median (0 = off; TrackerConfig.presence)")


def add_tracker_argument(parser: argparse.ArgumentParser) -> None:
    """Add --tracker KEY=VALUE (repeatable): any `TrackerConfig` field, e.g. bf16=true."""
    parser.add_argument("--tracker", action="append", default=[], metavar="KEY=VALUE",
                        help="tracker setting, e.g. size=360 mem_every=3 bf16=true "
                        "(repeatable; any TrackerConfig field, dotted for nested ones)")


def tracker_config(overrides: list[str], base: TrackerConfig | None = None) -> TrackerConfig:
    """Return `base` (default TrackerConfig()) with --tracker overrides; ValueError if bad."""
    return load_config(TrackerConfig, None, overrides, base)
