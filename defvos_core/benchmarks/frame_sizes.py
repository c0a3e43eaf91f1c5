"""Process memory under frames of many sizes (prints figures; never asserts).

    python -m defvos_core.benchmarks.frame_sizes [--sizes 40] [--size 240] [--settle 30]
        [--weights W] [--threads 2]

A 640x480 camera tracked for `--settle` frames (the memory full); then for each of
`--sizes` distinct frame sizes (aspect ratios 1:1 to 8:1, either way): reset, seed a box,
two steps; then the same sizes again; then the camera again, twice `--settle` frames.
Prints the process's RSS at each of those points and the distinct processing shapes the
model saw.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from typing import Sequence

import numpy as np
import torch

from defvos_core.build import build_tracker
from defvos_core.config import TrackerConfig
from defvos_core.inference.tracker import Tracker


def rss_mb() -> float:
    """Return the process's resident set now (Linux), else its peak so far, in MB."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def frame_sizes(count: int, seed: int = 0) -> list[tuple[int, int]]:
    """Return `count` distinct (H, W): short sides 96..1080, aspect ratios 1 to 7.9.

    Every third is portrait.
    """
    rng = np.random.default_rng(seed)
    sizes: list[tuple[int, int]] = []
    while len(sizes) < count:
        short = int(rng.integers(96, 1081))
        long = int(short * float(np.exp(rng.uniform(0, np.log(7.9)))))
        size = (long, short) if len(sizes) % 3 == 2 else (short, long)
        if size not in sizes:
            sizes.append(size)
    return sizes


def seed_and_step(tracker: Tracker, height: int, width: int, steps: int,
                  rng: np.random.Generator) -> None:
    """Reset, seed a box in the middle of a random frame of this size, step `steps` times."""
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    tracker.reset()
    tracker.add_objects(frame, boxes={1: (width // 4, height // 4, width // 2, height // 2)})
    for _ in range(steps):
        tracker.step(frame)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the figures (module docstring); return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="weights (default: shipped student)")
    parser.add_argument("--sizes", type=int, default=40, help="distinct frame sizes")
    parser.add_argument("--size", type=int, default=TrackerConfig.size,
                        help="processing short side")
    parser.add_argument("--settle", type=int, default=30, help="frames of one size at the end")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tracker = build_tracker(args.weights, TrackerConfig(size=args.size))
    rng = np.random.default_rng(0)
    shapes = set()
    seed_and_step(tracker, 480, 640, args.settle, rng)  # warm-up: a VGA camera
    figures = [(f"after {args.settle} frames of a 640x480 camera", rss_mb())]
    begin = time.perf_counter()
    sizes = frame_sizes(args.sizes)
    for height, width in sizes:
        seed_and_step(tracker, height, width, 2, rng)
        shapes.add(tracker.geometry.padded)
    figures.append((f"after {len(sizes)} new sizes", rss_mb()))
    for height, width in sizes:
        seed_and_step(tracker, height, width, 2, rng)
    figures.append(("after the same sizes again", rss_mb()))
    for _ in range(2):
        seed_and_step(tracker, 480, 640, args.settle, rng)
        figures.append((f"after {args.settle} frames of the camera again", rss_mb()))
    print(f"frame sizes: {len(sizes)} distinct -> {len(shapes)} processing shapes "
          f"{sorted(shapes)}; {time.perf_counter() - begin:.0f} s")
    for name, value in figures:
        print(f"RSS {name}: {value:.0f} MB ({value - figures[0][1]:+.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
