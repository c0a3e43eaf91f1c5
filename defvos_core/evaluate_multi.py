"""Multi-object evaluation from the command line (see `defvos_core.evaluation.multi_object`).

    python -m defvos_core.evaluate_multi [--weights W] [--data DIR] [--split val]
        [--objects 2,3,5] [--slots-per-bank 10,3] [--clips N] [--max-frames 40]
        [--size 240] [--backend torch] [--presence-drop 0.06] [--tracker KEY=VALUE ...]
        [--threads N] [--json out.json]

Composites clips of K objects from the split's sequences, tracks them with each
`slots_per_bank` value, and prints J&F with all objects tracked together (multi), each
tracked alone on the clip (single; object 1 on its own sequence) and each tracked alone on
its own sequence (own), the ratios, and ms per frame of the multi-object runs (wall and
process CPU time); then the same J&F by the ID slot the objects took. Exit code 2 on bad
input.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from defvos_core.cli_args import (add_presence_argument, add_sequence_arguments,
                                  add_tracker_argument, tracker_config)
from defvos_core.config import BACKENDS, PresenceConfig, TrackerConfig

PROG = "python -m defvos_core.evaluate_multi"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") \
            from error
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def build_parser() -> argparse.ArgumentParser:
    """Return the command line."""
    from defvos_core.evaluation.multi_object import MultiObjectConfig

    defaults = MultiObjectConfig()
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sequence_arguments(parser)
    parser.add_argument("--objects", type=_int_list, default=[2, 3, 5],
                        help="objects per clip, comma separated (default: 2,3,5)")
    parser.add_argument("--slots-per-bank", type=_int_list, default=None,
                        help="TrackerConfig.slots_per_bank values to compare, comma separated "
                        "(0 = all the model's slots; default: the TrackerConfig default)")
    parser.add_argument("--clips", type=int, default=0,
                        help="clips per object count, from evenly spaced sequences "
                        "(default 0: one starting at each sequence of the split)")
    parser.add_argument("--max-frames", type=int, default=defaults.max_frames,
                        help=f"clip length bound (default: {defaults.max_frames})")
    parser.add_argument("--size", type=int, default=TrackerConfig.size,
                        help="tracker processing size (short side; 0 = input size)")
    parser.add_argument("--backend", default=TrackerConfig.backend, choices=BACKENDS)
    parser.add_argument("--device", default=TrackerConfig.device, help="torch device")
    add_presence_argument(parser)
    add_tracker_argument(parser)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default 0: torch's own choice)")
    parser.add_argument("--no-single", action="store_true",
                        help="skip the single-object runs (the same for every setting: "
                        "enough to compare slots_per_bank values)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run, print; returns the exit code."""
    import torch

    from defvos_core.build import build_backend
    from defvos_core.data.roots import default_davis_root
    from defvos_core.data.splits import read_named_sequences, resolve_split
    from defvos_core.evaluation.multi_object import (MultiObjectConfig, by_slot,
                                                     evaluate_multi_object, format_by_slot,
                                                     format_results)

    args = build_parser().parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    root = args.data or default_davis_root()
    try:
        config = tracker_config(args.tracker, TrackerConfig(
            size=args.size or None, backend=args.backend, device=args.device,
            presence=PresenceConfig(confidence_drop=args.presence_drop)))
        slots = args.slots_per_bank or [config.slots_per_bank]
        for value in slots:
            TrackerConfig(slots_per_bank=value)  # checks the value
        clip_config = MultiObjectConfig(max_frames=args.max_frames)
        sequences = {s.name: s for s in
                     read_named_sequences(root, resolve_split(root, args.split))}
        for count in args.objects:
            if not 1 <= count <= len(sequences):
                raise ValueError(f"--objects {count}: split {args.split!r} has "
                                 f"{len(sequences)} sequences (one object each)")
        backend = build_backend(args.weights, config)
    except (FileNotFoundError, ValueError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    results, singles = evaluate_multi_object(
        backend, config, sequences, args.objects, slots, args.clips, clip_config,
        log=lambda text: print(text, file=sys.stderr, flush=True),
        with_single=not args.no_single)
    print(f"split {args.split}: {len(sequences)} sequences, clips of <= {args.max_frames} "
          f"frames, size {args.size}, backend {args.backend}, threads "
          f"{torch.get_num_threads()}")
    print(format_results(results))
    print()
    print(format_by_slot(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "argv": list(sys.argv[1:] if argv is None else argv),
            "split": args.split, "clip_config": asdict(clip_config),
            "results": [{"objects": r.num_objects, "slots_per_bank": r.slots_per_bank,
                         "banks": r.banks, "clips": r.clips, "multi": r.multi,
                         "single": r.single, "ratio": r.ratio, "own": r.own,
                         "ratio_own": r.ratio_own,
                         "wall_ms_per_frame": r.ms_per_frame(),
                         "cpu_ms_per_frame": r.ms_per_frame(cpu=True),
                         "timing": asdict(r.timing),
                         "per_object": [asdict(o) for o in r.objects]} for r in results],
            "by_slot": by_slot(results),
            "single_timing": asdict(singles.timing),
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
