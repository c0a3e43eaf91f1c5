"""Cross-validate a training recipe over the five DAVIS folds, or re-score its fold weights.

    python -m defvos_core.crossval --recipe config/training/recipes/teacher_cv.yaml --out DIR
    python -m defvos_core.crossval --config C [--stage-configs A,B] [--set k=v ...]
        [--folds 0,1,2,3,4] [--parallel N] [--final] [--smoke] [--data DIR] --out DIR [--resume]
    python -m defvos_core.crossval --evaluate DIR [--stage teacher] [--tracker size=360 ...]
        [--sweep config/inference_sweep.yaml] [--folds ...] [--device cpu] [--max-frames N]
        [--json FILE]

Training (`defvos_core.training.crossval.run_crossval`): each fold trains the recipe's
stages on its 24 sequences, chained within the fold (`--stage-configs static.yaml,
teacher.yaml`: the teacher starts from the fold's static weights; a student config distils
from the fold's previous stage), and scores each stage on the fold's 6 videos; DIR gets
foldK/<stage>.pt (+ .json), crossval.json and crossval.md. `--final` trains the chain once
on all 30 sequences (DIR/final/). Training logs: DIR/foldK/log.txt. `--smoke`: the tiny
CPU configs, 2 steps, 2 folds.
`--evaluate DIR`: every fold's own weights re-scored with tracker overrides; prints and
writes mean ± std of J&F and ms/frame (DIR/evaluate_<stage>_<overrides>.json unless --json);
"model.<field>" overrides run the weights with other parameter-free model settings (keys per
memory frame, offset range, short-term window). With `--sweep FILE` every row of the file
is scored that way and tabled (DIR/sweep_<stage>_<file>.json and .md;
`defvos_core.training.sweep`).
Exit code 0 on success, 1 when a fold failed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Sequence

from defvos_core.cli_args import add_tracker_argument  # no torch: the variable below still acts

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as python -m defvos_core.train

PROG = "python -m defvos_core.crossval"


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser: what to train or score, then where."""
    parser = argparse.ArgumentParser(prog=PROG, description="Cross-validate a training "
                                     "recipe over the five DAVIS folds.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--recipe", type=Path, help="recipe YAML (config/training/recipes/)")
    what.add_argument("--config", help="one training config (a one-stage recipe)")
    what.add_argument("--stage-configs", help="training configs chained per fold, "
                      "comma-separated (e.g. static.yaml,teacher.yaml)")
    what.add_argument("--evaluate", type=Path, metavar="DIR",
                      help="re-score DIR/foldK/<stage>.pt with --tracker settings")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="training override for every stage")
    parser.add_argument("--folds", type=_fold_list, default=None,
                        help="comma-separated fold ids (default: the recipe's, or all)")
    parser.add_argument("--parallel", type=int, default=None,
                        help="folds trained at once (default: the recipe's, else 1)")
    parser.add_argument("--final", action="store_true",
                        help="train the chain once on all 30 sequences (no validation)")
    parser.add_argument("--smoke", action="store_true",
                        help="the same path with the tiny CPU configs, 2 steps, 2 folds")
    parser.add_argument("--data", type=Path, default=None, help="folder holding "
                        "davis2016-train-240p/ and ecssd/ (default: $DEFVOS_DATA, ./data)")
    parser.add_argument("--out", type=Path, help="output folder (training)")
    parser.add_argument("--resume", action="store_true",
                        help="keep finished stages, continue unfinished ones")
    scoring = parser.add_argument_group("--evaluate")
    scoring.add_argument("--stage", default=None,
                         help="stage whose weights are scored (default: the recipe's last)")
    add_tracker_argument(scoring)
    scoring.add_argument("--sweep", type=Path, default=None, metavar="FILE",
                         help="score every setting of a sweep file instead (e.g. "
                         "config/inference_sweep.yaml; --tracker applies to every row)")
    scoring.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    scoring.add_argument("--threads", type=int, default=0,
                         help="torch CPU threads (default: torch's)")
    scoring.add_argument("--max-frames", type=int, default=0, help="frames per video (0: all)")
    scoring.add_argument("--json", type=Path, default=None, help="report file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, run, report. Returns the exit code."""
    args = build_parser().parse_args(argv)
    from defvos_core.training.crossval import configure_logging

    configure_logging()
    try:
        return _evaluate(args) if args.evaluate is not None else _train(args)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2


def _train(args: argparse.Namespace) -> int:
    from defvos_core.training.crossval import CrossvalOptions, markdown_table, run_crossval
    from defvos_core.training.recipes import chained_recipe, load_recipe, smoke_recipe

    if args.out is None:
        raise ValueError("--out is required for training")
    if args.recipe is not None:
        recipe = load_recipe(args.recipe)
    else:
        recipe = chained_recipe([args.config] if args.config else
                                [c for c in args.stage_configs.split(",") if c])
    if args.folds is not None:
        recipe.folds = args.folds
    if args.parallel is not None:
        recipe.parallel = args.parallel
    recipe.final = recipe.final or args.final
    recipe.validate()
    if args.smoke:
        recipe = smoke_recipe(recipe)
    options = CrossvalOptions(out=args.out, data=args.data, overrides=args.overrides,
                              resume=args.resume)
    report = run_crossval(recipe, options)
    if not recipe.final:
        print(markdown_table(report), end="")
    print(f"report: {args.out / ('final.json' if recipe.final else 'crossval.json')}")
    return 1 if any("error" in record for record in report["folds"]) else 0


def _evaluate(args: argparse.Namespace) -> int:
    from defvos_core.data.folds import NUM_FOLDS
    from defvos_core.training.crossval import evaluate_folds

    directory = args.evaluate
    report_path = directory / "crossval.json"
    recorded = json.loads(report_path.read_text()) if report_path.is_file() else {}
    stage = args.stage or (recorded.get("recipe", {}).get("stages") or [{}])[-1].get("name")
    if not stage:
        raise ValueError(f"{directory}: no crossval.json to take the stage from; pass --stage")
    folds = args.folds if args.folds is not None else \
        [record["fold"] for record in recorded.get("folds", []) if "error" not in record] \
        or list(range(NUM_FOLDS))
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    if args.sweep is not None:
        return _sweep(args, directory, stage, folds)
    report = evaluate_folds(directory, stage, folds, args.tracker, args.device,
                            args.max_frames, args.data)
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(args.tracker)) or "default"
    path = args.json or directory / f"evaluate_{stage}_{tag}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    for name, stats in report["summary"].items():
        std = "n/a" if stats["std"] is None else f"{stats['std']:.4f}"
        print(f"{name}: {stats['mean']:.4f} ± {std} over folds {folds}")
    print(f"report: {path}")
    return 0


def _sweep(args: argparse.Namespace, directory: Path, stage: str, folds: list[int]) -> int:
    from defvos_core.training.sweep import read_sweep, sweep_folds, sweep_table

    rows = read_sweep(args.sweep)
    path = args.json or directory / f"sweep_{stage}_{args.sweep.stem}.json"

    def save(report: dict) -> str:  # after each row, so an interrupted sweep keeps its rows
        path.write_text(json.dumps(report, indent=2) + "\n")
        table = sweep_table(report)
        path.with_suffix(".md").write_text(table)
        return table

    report = sweep_folds(directory, stage, folds, rows, args.tracker, args.device,
                         args.max_frames, args.data,
                         log=lambda text: print(text, file=sys.stderr, flush=True), on_row=save)
    print(save(report), end="")
    print(f"report: {path} (+ .md)")
    return 0


def _fold_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated fold ids, got "
                                         f"{text!r}") from error


if __name__ == "__main__":
    sys.exit(main())
