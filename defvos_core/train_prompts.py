r"""Train the prompt head (box / clicks -> seed mask) on the frozen student and ship it with it.

    python -m defvos_core.train_prompts --out student_prompts.pt [--weights STUDENT.pt] \\
        [--set fold=2] [--set steps=3000] [--set key=value ...]
    python -m defvos_core.train_prompts --head-from student_prompts.pt --out student.pt

Keys are the fields of `defvos_core.training.prompt_trainer.PromptTrainConfig` (`fold` -1:
DAVIS frames of the shipped tracker's 25 training sequences; k: the 24 outside fold k; ECSSD:
the 800 non-held-out images). Writes `--out`: the student's weights plus the head, with
`meta["prompt_head"]` (data, steps, parent sha256, this command). Exit code 2 on bad input.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from typing import Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep (shared CPU)

PROG = "python -m defvos_core.train_prompts"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Train the prompt head and write "
                                     "it into a copy of the student's weights file.")
    parser.add_argument("--out", required=True, help="weights file to write")
    parser.add_argument("--weights", default="", help="the student (default: the shipped one)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a PromptTrainConfig field")
    parser.add_argument("--head-from", default=None, metavar="FILE",
                        help="no training: copy the head (and its recorded training) of FILE, "
                        "a file this command wrote, onto --weights")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from defvos_core.config_io import from_dict, parse_overrides
    from defvos_core.training.prompt_trainer import PromptTrainConfig, train_and_write

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    command = f"{PROG} {shlex.join(sys.argv[1:] if argv is None else argv)}"
    try:
        if args.head_from:
            from defvos_core.model.checkpoint import resolve_weights
            from defvos_core.model.prompt_weights import copy_prompt_head

            copy_prompt_head(args.head_from, resolve_weights(args.weights or None), args.out)
            print(f"wrote {args.out}")
            return 0
        values = parse_overrides(args.overrides)
        values.update(out=args.out, weights=args.weights)
        config = from_dict(PromptTrainConfig, values, "train_prompts")
        out = train_and_write(config, command)
    except (FileNotFoundError, ValueError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
