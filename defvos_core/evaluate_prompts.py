r"""Measure box / click seeding against GrabCut and the true mask; print the tables.

    python -m defvos_core.evaluate_prompts --parts stills,davis,overlap \\
        [--weights W.pt] [--fold-weights 'runs/prompt_heads/fold{k}.pt'] [--data DIR] \\
        [--methods mask,corner,head,head+refine,grabcut] [--kinds box,box_jitter,click,clicks] \\
        [--folds 0,1,2,3,4] [--stills 200] [--json OUT.json]

Parts:
- stills: seed IoU alone on ECSSD's 200 held-out images (every 5th), with `--weights`
  (default: the shipped student and its head);
- davis: seed IoU and J&F of tracking DAVIS videos (DAVIS protocol) from each seed, with
  5-fold cross-validation of the head: fold k's 6 videos use `--fold-weights` with {k}
  (a head trained without them: `train_prompts --set fold=k`). The tracker itself is the
  shipped student in every fold (trained on 25 of the 30 videos), so only the comparison
  between seeds is meaningful there, not the absolute J&F;
- overlap: each DAVIS video with a held-out ECSSD object pasted so the two boxes overlap
  (`evaluation.composites`), both objects box-seeded, same fold heads.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROG = "python -m defvos_core.evaluate_prompts"
PARTS = ("stills", "davis", "overlap")


def build_parser() -> argparse.ArgumentParser:
    from defvos_core.config import PROMPT_METHODS
    from defvos_core.evaluation.prompts import CORNER, MASK, PROMPT_KINDS

    parser = argparse.ArgumentParser(prog=PROG, description="Seed IoU and J&F of box / click "
                                     "seeds by the prompt head, GrabCut and the true mask.")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"of {PARTS}")
    parser.add_argument("--weights", default=None, help="weights for stills (default: shipped)")
    parser.add_argument("--fold-weights", default=None,
                        help="weights of fold k's head, with {k} (default: --weights)")
    parser.add_argument("--data", default=None, help="datasets folder (default: $DEFVOS_DATA)")
    parser.add_argument("--methods", default=f"{MASK},head,head+refine,grabcut",
                        help=f"comma separated: {MASK} (the true mask), {CORNER} (control: a "
                        "patch in a corner, not on the object) or prompt methods "
                        f"{PROMPT_METHODS}")
    parser.add_argument("--kinds", default=",".join(PROMPT_KINDS))
    parser.add_argument("--folds", default="0,1,2,3,4")
    parser.add_argument("--stills", type=int, default=0, help="first N held-out stills (0: all)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def run(args: argparse.Namespace, log=print) -> dict:
    """Run the asked parts; print each table; return {part: {"method/kind": summary}}."""
    import torch

    from defvos_core.build import build_tracker
    from defvos_core.data.ecssd import read_static_images
    from defvos_core.data.folds import FOLD_SEQUENCES, FOLDS
    from defvos_core.data.roots import DAVIS_NAME, ECSSD_NAME, data_root
    from defvos_core.data.sequences import read_davis
    from defvos_core.evaluation.composites import overlap_composite
    from defvos_core.evaluation.prompts import (
        Clip,
        format_table,
        merge_rows,
        score_clips,
        score_stills,
    )
    from defvos_core.training.prompt_data import ecssd_split

    torch.set_num_threads(args.threads)
    parts, methods, kinds = _split(args.parts), _split(args.methods), _split(args.kinds)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"--parts: unknown {unknown}; expected some of {PARTS}")
    root = Path(args.data) if args.data else data_root()
    _, heldout = ecssd_split(read_static_images(root / ECSSD_NAME))
    results: dict = {"command": f"{PROG} {shlex.join(sys.argv[1:])}"}

    def report(part: str, rows: dict, title: str) -> None:
        log(format_table(rows, title))
        results[part] = {f"{m}/{k}": row.summary() for (m, k), row in rows.items()}

    if "stills" in parts:
        stills = heldout[:args.stills] if args.stills else heldout
        rows = score_stills(build_tracker(args.weights), stills, kinds, methods)
        report("stills", rows, f"seed IoU on {len(stills)} held-out ECSSD images "
               f"(weights: {args.weights or 'shipped'})")
    folds = [int(k) for k in _split(args.folds)]
    for part in ("davis", "overlap"):
        if part not in parts:
            continue
        per_fold = []
        for k in folds:
            weights = args.fold_weights.format(k=k) if args.fold_weights else args.weights
            tracker = build_tracker(weights)
            sequences = read_davis(root / DAVIS_NAME, "train", "240p", sequences=FOLDS[k])
            if part == "davis":
                clips = [Clip(s.name, len(s), s.load_frame, s.load_label_map)
                         for s in sequences]
                part_kinds, part_methods = kinds, methods
            else:
                composites = [overlap_composite(
                    s, heldout[7 * FOLD_SEQUENCES.index(s.name) % len(heldout)])
                    for s in sequences]
                clips = [Clip(c.name, len(c.frames), c.frames.__getitem__, c.labels.__getitem__)
                         for c in composites]
                part_kinds = [kind for kind in kinds if kind.startswith("box")]
                part_methods = methods
            per_fold.append(score_clips(tracker, clips, part_kinds, part_methods, log))
            log(f"fold {k} done ({weights or 'shipped'})")
        what = "DAVIS videos" if part == "davis" else "two-object overlap composites"
        report(part, merge_rows(per_fold), f"{what}, folds {folds} (head of fold k: "
               f"{args.fold_weights or args.weights or 'shipped'})")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
