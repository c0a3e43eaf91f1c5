"""Run a tracker over a sequence of frames: the one code path of the CLI, demo and evaluator."""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from defvos_core.inference.prompts import SeedPrompts
from defvos_core.inference.tracker import Tracker, TrackResult


def segment_frames(tracker: Tracker, frames: Iterable[tuple[str, np.ndarray]],
                   seed: np.ndarray | None, prompts: SeedPrompts | None = None
                   ) -> Iterator[tuple[str, np.ndarray, TrackResult]]:
    """Yield (stem, frame, result) for every frame; the first frame is seeded with `seed`.

    frames: (stem, (H, W, 3) uint8 RGB) pairs in order; seed: (H, W) label map of frame 0
    (None: prompts only); prompts: boxes / clicks on frame 0 (`Tracker.add_objects`).
    The tracker is reset first, so one tracker can serve many sequences.
    """
    tracker.reset()
    for index, (stem, frame) in enumerate(frames):
        if index == 0 and prompts:
            result = tracker.add_objects(frame, seed, boxes=prompts.boxes, points=prompts.points)
        elif index == 0:
            result = tracker.add_objects(frame, seed)
        else:
            result = tracker.step(frame)
        yield stem, frame, result
