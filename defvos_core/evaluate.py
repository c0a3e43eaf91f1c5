"""DAVIS J&F scoring from the command line.

Score prediction folders:

    python -m defvos_core.evaluate --pred DIR --gt DIR [--sequences a,b] [--plot out.png]
        [--json out.json]

DIR is either a folder of sequence folders (`<seq>/<stem>.png`) or one sequence folder of
PNGs.

Or run a model and score it (semi-supervised: each sequence is seeded with its first
ground-truth mask and tracked by `defvos_core.evaluation.tracking.score_sequences`):

    python -m defvos_core.evaluate --weights W [--data DIR] [--split val|train|FILE]
        [--sequences a,b] [--size 240] [--backend torch] [--tracker KEY=VALUE ...]
        [--offsets] [--out PRED_DIR] [--plot out.png]

`--split val` is the held-out list `defvos_core.data.splits.HOLDOUT_SEQUENCES`; `train` is
the rest of `ImageSets/train.txt`; anything else is an ImageSets-style file (path, or a name
under `DIR/ImageSets/`). With `--out` the predicted PNGs are written there and scored from
the folder (the same path as `--pred/--gt`). `--offsets` also prints how far the trained
deformable offsets move the sampled points (`defvos_core.evaluation.offsets`).

Prints the per-sequence and overall table; exit code 0 on success, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

from defvos_core.cli_args import add_tracker_argument, tracker_config
from defvos_core.config import BACKENDS, TrackerConfig
from defvos_core.data.roots import DATA_ENV, DAVIS_NAME
from defvos_core.evaluation.folders import evaluate_folders
from defvos_core.evaluation.metrics import summarize
from defvos_core.evaluation.report import format_table, plot_per_sequence

PROG = "python -m defvos_core.evaluate"


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser: input selection, then output options."""
    parser = argparse.ArgumentParser(prog=PROG, description="Score DAVIS-layout predictions "
                                     "with the official J&F (semi-supervised protocol).")
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--pred", type=Path, default=None,
                        help="predicted label maps: <seq>/<stem>.png, or one sequence folder")
    inputs.add_argument("--gt", type=Path, default=None,
                        help="ground-truth label maps, same layout as --pred")
    inputs.add_argument("--sequences", type=_sequence_list, default=None,
                        help="comma-separated sequence names (default: all in --gt, or the "
                        "whole --split)")
    model = parser.add_argument_group("run a model (instead of --pred/--gt)")
    model.add_argument("--weights", type=str, default=None,
                       help="weights file to evaluate ('default' = the shipped student)")
    model.add_argument("--data", type=Path, default=None,
                       help=f"DAVIS-layout data folder (default: ${DATA_ENV}/{DAVIS_NAME}, "
                       f"or ./data/{DAVIS_NAME} without ${DATA_ENV})")
    model.add_argument("--split", default="val",
                       help="val (held-out list), train, or an ImageSets file (default: val)")
    model.add_argument("--resolution", default="240p",
                       help="JPEGImages/Annotations sub-folder (default: 240p)")
    model.add_argument("--size", type=int, default=TrackerConfig.size,
                       help=f"tracker processing size, short side; 0 = input size (default: "
                       f"{TrackerConfig.size})")
    model.add_argument("--backend", default=TrackerConfig.backend, choices=BACKENDS)
    model.add_argument("--device", default=TrackerConfig.device,
                       help=f"torch device (default: {TrackerConfig.device})")
    add_tracker_argument(model)
    model.add_argument("--offsets", action="store_true",
                       help="also print how far the deformable offsets move the sampled "
                       "points (torch backend)")
    model.add_argument("--max-frames", type=int, default=0,
                       help="use only the first N frames of each sequence (0 = all)")
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--out", type=Path, default=None,
                         help="with --weights: write predicted PNGs to OUT/<seq>/<stem>.png")
    outputs.add_argument("--plot", type=Path, default=None,
                         help="write a per-sequence J&F bar chart to this PNG")
    outputs.add_argument("--json", type=Path, default=None,
                         help="write the summary (overall and per sequence) to this JSON file")
    return parser


def score_prediction_folders(pred: Path, gt: Path, sequences: list[str] | None) -> dict:
    """`summarize` of `evaluate_folders`; bad input becomes a UsageError naming the path."""
    try:
        return summarize(evaluate_folders(pred, gt, sequences))
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from error


def write_reports(summary: dict, plot: Path | None, json_path: Path | None) -> None:
    """Print the table and write the optional chart and JSON summary."""
    print(format_table(summary))
    if plot is not None:
        plot_per_sequence(summary, plot)
        print(f"plot: {plot}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"json: {json_path}")


def run_model(args: argparse.Namespace) -> dict:
    """Run the --weights mode: track the split's sequences and return the summary."""
    from defvos_core.build import build_tracker
    from defvos_core.data.roots import default_davis_root
    from defvos_core.data.splits import read_named_sequences, resolve_split
    from defvos_core.evaluation.offsets import format_offsets, offset_statistics, record_offsets
    from defvos_core.evaluation.tracking import score_sequences

    root = args.data if args.data is not None else default_davis_root()
    if not Path(root).is_dir():
        raise UsageError(f"{root}: data folder not found (pass --data)")
    try:
        names = resolve_split(root, args.split)
        if args.sequences is not None:
            unknown = sorted(set(args.sequences) - set(names))
            if unknown:
                raise UsageError(f"sequences {unknown} are not in split {args.split!r}")
            names = [name for name in names if name in args.sequences]
        sequences = read_named_sequences(root, names, args.resolution)
        weights = None if args.weights == "default" else args.weights
        config = tracker_config(args.tracker, TrackerConfig(
            size=args.size or None, backend=args.backend, device=args.device))
        if args.offsets and config.backend != "torch":
            raise UsageError("--offsets needs the torch backend")
        tracker = build_tracker(weights, config)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from error
    with record_offsets(tracker.backend.model) if args.offsets else nullcontext() as records:
        results = score_sequences(tracker, sequences, args.max_frames, args.out,
                                  log=lambda text: print(text, file=sys.stderr))
    if records is not None:
        print(format_offsets(offset_statistics(records, tracker.backend.model_config
                                               .offset_range)))
    if args.out is not None:
        gt_root = Path(root) / "Annotations" / args.resolution
        if args.max_frames <= 0:
            return score_prediction_folders(args.out, gt_root, list(results))
        print("scored in memory: --max-frames truncates the sequences", file=sys.stderr)
    return summarize(results)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, score, report. Returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.weights is not None:
            if args.pred is not None or args.gt is not None:
                raise UsageError("--weights runs a model; do not combine it with --pred/--gt")
            summary = run_model(args)
        else:
            if args.pred is None or args.gt is None:
                raise UsageError("give --pred and --gt (score folders) or --weights (run a "
                                 "model)")
            summary = score_prediction_folders(args.pred, args.gt, args.sequences)
        write_reports(summary, args.plot, args.json)
    except (UsageError, OSError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    return 0


def _sequence_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated sequence names")
    return names


if __name__ == "__main__":
    sys.exit(main())
