"""Score weights on held-out data only, to choose a recipe or a checkpoint.

    python -m defvos_core.evaluate_heldout --weights A.pt B.pt [--split val] [--clips 25]
        [--frames 10] [--slots-per-bank 1,0] [--threads 2] [--json out.json] [--record]

For every weights file: DAVIS J&F on the held-out `--split` sequences (the trainer's
validation path), and J&F on the held-out composites
(`defvos_core.evaluation.heldout_composites`: clips of 1-5 objects made only of held-out
photographs), tracked with each `--slots-per-bank` value (1 = a bank per object, 0 = one
shared bank). Prints one table row per weights file; `--record` also writes the figures
into each file's meta (`heldout_eval`: the DAVIS split, `heldout_composites`), as shipped
weights carry them. Exit code 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

PROG = "python -m defvos_core.evaluate_heldout"


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected integers, got {text!r}") from error


def build_parser() -> argparse.ArgumentParser:
    """Return the command line."""
    from defvos_core.evaluation.heldout_composites import HeldoutCompositeConfig

    defaults = HeldoutCompositeConfig()
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="+", required=True,
                        help="weights files ('default' = the shipped student)")
    parser.add_argument("--data", type=Path, default=None,
                        help="folder holding davis2016-train-240p, ecssd, duts-tr "
                        "(default: $DEFVOS_DATA)")
    parser.add_argument("--split", default="val", help="DAVIS sequences (default: val)")
    parser.add_argument("--clips", type=int, default=25, help="held-out composites")
    parser.add_argument("--frames", type=int, default=10, help="frames per composite")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--slots-per-bank", type=_int_list, default=[1, 0],
                        help="composites tracked with each value (default: 1,0)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--record", action="store_true",
                        help="write the figures into each weights file's meta")
    return parser


def evaluate_weights(weights: str, args: argparse.Namespace, clips: list,
                     sequences: list) -> dict:
    """Every figure of one weights file (see the module docstring)."""
    from defvos_core.build import build_tracker
    from defvos_core.config import TrackerConfig
    from defvos_core.evaluation.heldout_composites import score_composites
    from defvos_core.evaluation.metrics import summarize
    from defvos_core.evaluation.tracking import score_sequences

    path = None if weights == "default" else weights
    davis = summarize(score_sequences(build_tracker(path), sequences))
    row: dict = {"weights": weights, "davis_J&F": davis["J&F-Mean"],
                 "davis_J": davis["J-Mean"], "davis_F": davis["F-Mean"],
                 "davis_sequences": {name: values["J&F"]
                                     for name, values in davis["sequences"].items()}}
    for slots in args.slots_per_bank:
        tracker = build_tracker(path, TrackerConfig(slots_per_bank=slots))
        row[f"composites_spb{slots}"] = score_composites(tracker, clips)
    return row


def record(row: dict, command: str, split: str, composites: dict) -> None:
    """Write `row`'s figures into its weights file's meta (`provenance.record_meta`)."""
    from defvos_core.training.provenance import record_meta

    summaries = {key.removeprefix("composites_"): {k: v for k, v in value.items()
                                                   if k != "per_object"}
                 for key, value in row.items() if key.startswith("composites_")}
    record_meta(row["weights"], heldout_eval={
        "split": split, "sequences": sorted(row["davis_sequences"]),
        "J&F": row["davis_J&F"], "J": row["davis_J"], "F": row["davis_F"],
        "per_sequence": row["davis_sequences"], "command": command,
        "protocol": f"DAVIS semi-supervised J&F, davis2016-train-240p {split} sequences, 240p"},
        heldout_composites={"config": composites, "command": command, **summaries})


def format_rows(rows: list[dict], slots_per_bank: list[int]) -> str:
    """Markdown table: DAVIS J&F, then composites J&F (all / multi-object) per setting."""
    header = ["weights", "DAVIS J&F"] + [f"composites spb={s} (all / multi)"
                                         for s in slots_per_bank]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["weights"], f"{row['davis_J&F']:.3f}"]
        for slots in slots_per_bank:
            result = row[f"composites_spb{slots}"]
            cells.append(f"{result['J&F']:.3f} / {result['J&F_multi']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import os

    import torch

    from defvos_core.data.roots import DATA_ENV, DAVIS_NAME, DUTS_NAME, ECSSD_NAME, data_root
    from defvos_core.data.splits import read_named_sequences, resolve_split
    from defvos_core.evaluation.heldout_composites import (HeldoutCompositeConfig,
                                                           heldout_composites)

    torch.set_num_threads(args.threads)
    root = args.data or data_root()
    try:
        config = HeldoutCompositeConfig(clips=args.clips, frames=args.frames, seed=args.seed)
        davis = root / DAVIS_NAME
        sequences = read_named_sequences(davis, resolve_split(davis, args.split))
        clips = heldout_composites(config, [str(root / ECSSD_NAME), str(root / DUTS_NAME)])
        for weights in args.weights:
            if weights != "default" and not os.path.isfile(weights):
                raise FileNotFoundError(f"weights file not found: {weights}")
    except (ValueError, FileNotFoundError) as error:
        print(f"{PROG}: error: {error} (data: --data or ${DATA_ENV})", file=sys.stderr)
        return 2
    if args.record and "default" in args.weights:
        print(f"{PROG}: error: --record writes into the files: name them, not 'default'",
              file=sys.stderr)
        return 2
    command = f"{PROG} " + " ".join(sys.argv[1:] if argv is None else argv)
    composites = vars(config) | {"size": list(config.size)}
    rows = []
    for weights in args.weights:
        rows.append(evaluate_weights(weights, args, clips, sequences))
        if args.record:
            record(rows[-1], command, args.split, composites)
        print(format_rows(rows[-1:], args.slots_per_bank).splitlines()[-1], flush=True)
    print(format_rows(rows, args.slots_per_bank))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": command, "split": args.split,
                                         "composites": composites, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
