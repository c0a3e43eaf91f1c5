"""Lost-and-found evaluation from the command line (see `defvos_core.evaluation.occlusion`).

    python -m defvos_core.evaluate_occlusion [--weights W] [--data DIR] [--split S]
        [--lengths 5,10,20] [--size 240] [--presence-drop 0.03] [--json out.json]

Occludes each sequence of the split fully for N frames, tracks it and prints false presence
during the occlusion, re-detection rate and delay after it. Exit code 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from defvos_core.cli_args import add_presence_argument, add_sequence_arguments
from defvos_core.config import PresenceConfig, TrackerConfig

PROG = "python -m defvos_core.evaluate_occlusion"


def build_parser() -> argparse.ArgumentParser:
    """Return the command line."""
    from defvos_core.evaluation.occlusion import OcclusionConfig

    defaults = OcclusionConfig()
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sequence_arguments(parser)
    parser.add_argument("--lengths", default=",".join(map(str, defaults.lengths)),
                        help="occlusion lengths in frames, comma separated")
    parser.add_argument("--size", type=int, default=TrackerConfig.size,
                        help="tracker processing size (short side)")
    add_presence_argument(parser)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run, print; returns the exit code."""
    from defvos_core.build import build_tracker
    from defvos_core.data.roots import default_davis_root
    from defvos_core.data.splits import read_named_sequences, resolve_split
    from defvos_core.evaluation.occlusion import (OcclusionConfig, evaluate_occlusions,
                                                  format_summaries)

    args = build_parser().parse_args(argv)
    root = args.data or default_davis_root()
    try:
        lengths = tuple(int(text) for text in args.lengths.split(",") if text.strip())
        config = OcclusionConfig(lengths=lengths)
        sequences = read_named_sequences(root, resolve_split(root, args.split))
        sources = read_named_sequences(root, resolve_split(root, "train"))
        presence = PresenceConfig(confidence_drop=args.presence_drop)
        tracker = build_tracker(args.weights, TrackerConfig(size=args.size or None,
                                                            presence=presence))
    except (FileNotFoundError, ValueError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    summaries = evaluate_occlusions(tracker, sequences, sources, config)
    print(format_summaries(summaries))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"config": asdict(config), "lengths": [
            {"length": s.length, "false_presence": s.false_presence,
             "redetection_rate": s.redetection_rate, "delays": s.delays,
             "iou_after": s.iou_after, "results": [asdict(r) for r in s.results]}
            for s in summaries if s.results]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
