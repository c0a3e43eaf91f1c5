"""DAVIS J&F scoring from the command line.

    python -m defvos_core.evaluate --pred DIR --gt DIR [--sequences a,b] [--plot out.png]
        [--json out.json]

DIR is either a folder of sequence folders (`<seq>/<stem>.png`) or one sequence folder of
PNGs. Prints the per-sequence and overall table; exit code 0 on success, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from defvos_core.evaluation.folders import evaluate_folders
from defvos_core.evaluation.metrics import summarize
from defvos_core.evaluation.report import format_table, plot_per_sequence

PROG = "python -m defvos_core.evaluate"


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: input selection, then output options."""
    parser = argparse.ArgumentParser(prog=PROG, description="Score DAVIS-layout predictions "
                                     "with the official J&F (semi-supervised protocol).")
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--pred", type=Path, required=True,
                        help="predicted label maps: <seq>/<stem>.png, or one sequence folder")
    inputs.add_argument("--gt", type=Path, required=True,
                        help="ground-truth label maps, same layout as --pred")
    inputs.add_argument("--sequences", type=_sequence_list, default=None,
                        help="comma-separated sequence names (default: all in --gt)")
    outputs = parser.add_argument_group("outputs")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, score, report. Returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
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
