"""Print how fast synthetic static clips are made, and the loader's share of training steps.

    python scripts/bench_static_clips.py items [--items 150 --crop 240 --frames 5]
    python scripts/bench_static_clips.py train [--config config/training/cpu_static.yaml
                                                --steps 12 --set key=value ...]

`items`: items/s of `StaticClipDataset` through a DataLoader with one worker process
(batch 1, after a warm-up of 10 items; decoded images are cached per worker, so the
first epoch, measured here, is the slow one). `train`: runs the trainer and times how
long each step waits for its batch; prints wait / total step time (the first step,
which starts the worker, is left out). Data: `--data` (default `$DEFVOS_DATA`, else
`./data`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as python -m defvos_core.train does

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _data_dir(value: str | None) -> Path:
    from defvos_core.data.roots import data_root

    return Path(value) if value else data_root()


def bench_items(args: argparse.Namespace) -> None:
    import torch

    from defvos_core.data.clip_dataset import ClipSamplingConfig, make_loader
    from defvos_core.data.ecssd import read_static_images
    from defvos_core.data.splits import read_named_sequences, resolve_split
    from defvos_core.data.static_clips import StaticClipConfig
    from defvos_core.data.static_dataset import StaticClipDataset

    torch.set_num_threads(1)
    data = _data_dir(args.data)
    davis = data / "davis2016-train-240p"
    clip = ClipSamplingConfig(num_frames=args.frames, crop_size=(args.crop, args.crop))
    dataset = StaticClipDataset(read_static_images(data / "ecssd"), clip, StaticClipConfig(),
                                read_named_sequences(davis, resolve_split(davis, "train")),
                                samples_per_epoch=args.items + 10, seed=0)
    loader = make_loader(dataset, batch_size=1, num_workers=1, shuffle=True)
    iterator = iter(loader)
    for _ in range(10):
        next(iterator)
    started = time.perf_counter()
    for _ in range(args.items):
        next(iterator)
    seconds = time.perf_counter() - started
    print(f"static clips: {args.items / seconds:.1f} items/s with 1 worker "
          f"({args.frames} frames, {args.crop}x{args.crop}, {args.items} items in "
          f"{seconds:.1f} s)")


class TimedLoader:
    """Wrap a DataLoader; record the seconds each `next()` waits."""

    def __init__(self, loader) -> None:
        self.loader = loader
        self.sampler = loader.sampler
        self.waits: list[float] = []

    def __iter__(self):
        iterator = iter(self.loader)
        while True:
            started = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.waits.append(time.perf_counter() - started)
            yield batch


def bench_train(args: argparse.Namespace) -> None:
    from defvos_core.training.config import load_train_config
    from defvos_core.training.trainer import Trainer

    data = _data_dir(args.data)
    overrides = [f"data.root={data / 'davis2016-train-240p'}",
                 f"data.static.roots=[{data / 'ecssd'},{data / 'duts-tr'}]", f"steps={args.steps}",
                 "validation.enabled=false", "run_dir=/tmp/defvos_bench_static",
                 f"checkpoint_every={args.steps}", *args.overrides]
    config = load_train_config(args.config, overrides)
    trainer = Trainer(config)
    timed = TimedLoader(trainer.loader)
    trainer.loader = timed
    step_ends: list[float] = []
    original = trainer.train_step

    def train_step(batch):
        terms = original(batch)
        step_ends.append(time.perf_counter())
        return terms

    trainer.train_step = train_step
    started = time.perf_counter()
    trainer.run()
    trainer.loader = timed.loader
    trainer.close()
    total = step_ends[-1] - step_ends[0]  # steps 2..N, each from the end of the previous
    waited = sum(timed.waits[1:len(step_ends)])
    print(f"{config.stage} ({args.config}, batch {config.batch_size}, "
          f"{config.data.clip.num_frames}x{tuple(config.data.clip.crop_size)}, "
          f"{config.data.num_workers} worker): {len(step_ends) - 1} steps in {total:.1f} s, "
          f"{total / (len(step_ends) - 1):.2f} s/step; waiting for batches {waited:.1f} s = "
          f"{100 * waited / total:.1f} % of the step time (run {time.perf_counter() - started:.0f}"
          f" s in all)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("items", "train"))
    parser.add_argument("--data", default=None)
    parser.add_argument("--items", type=int, default=150)
    parser.add_argument("--crop", type=int, default=240)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--config", default=str(REPO / "config/training/cpu_static.yaml"))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    bench_items(args) if args.mode == "items" else bench_train(args)


if __name__ == "__main__":
    main()
