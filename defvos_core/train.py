"""Train a defvos model: static pretraining, the teacher, or the student (distilled).

    python -m defvos_core.train --config config/training/teacher.yaml [--set key=value ...]
        [--stage static|teacher|student] [--resume]
    torchrun --nproc_per_node N -m defvos_core.train --config ...     # DistributedDataParallel

The YAML file and `--set` overrides build a `defvos_core.training.config.TrainConfig`.
The static stage trains supervised on synthetic clips from still images (ECSSD) and objects
of the training sequences (config/training/static.yaml); its weights can start the teacher
stage (`init_weights`).
`--resume` continues from `<run_dir>/checkpoint.pt` when it exists. The run ends by
validating on the held-out sequences and exporting a weights-only fp16 file
(`export.weights`, default `<run_dir>/<stage>.pt`). Exit code 0 on success, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Sequence

# OpenMP threads that spin while waiting are a disaster on a shared CPU (measured here:
# 20-26 s instead of 1.4-3 s per step with other jobs running); let idle threads sleep.
# Set before torch is imported; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROG = "python -m defvos_core.train"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Pretrain on synthetic clips, "
                                     "train the defvos teacher or distil the student from it.")
    parser.add_argument("--config", default=None, help="training config YAML")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value, e.g. "
                        "--set optim.lr=1e-4 (repeatable; values are YAML scalars)")
    parser.add_argument("--stage", choices=("static", "teacher", "student"), default=None,
                        help="override the config's stage")
    parser.add_argument("--resume", action="store_true",
                        help="continue from <run_dir>/checkpoint.pt if it exists")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from defvos_core.config_io import to_dict
    from defvos_core.training.config import load_train_config

    try:
        config = load_train_config(args.config, args.overrides, args.stage)
    except ValueError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    if args.print_config:
        import yaml

        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stdout, force=True)
    from defvos_core.training.trainer import Trainer

    try:
        trainer = Trainer(config, resume=args.resume)
    except (FileNotFoundError, ValueError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    try:
        summary = trainer.run()
    finally:
        trainer.close()
    if trainer.context.is_main:
        print("result: " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
