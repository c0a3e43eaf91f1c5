"""Run a tracker over DAVIS-layout sequences and score it (the evaluator's and trainer's path).

Semi-supervised protocol: each sequence is seeded with its first ground-truth frame (void 255
is background, the tracker's seed rule) through `segment_frames`, the code path of the CLI
and the demo, and every annotated frame is scored with the official J&F.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from defvos_core.data.masks import write_label_map
from defvos_core.data.sequences import VideoSequence
from defvos_core.evaluation.metrics import evaluate_sequence
from defvos_core.inference.seeds import clean_seed
from defvos_core.inference.tracker import Tracker
from defvos_core.inference.video import segment_frames


def track_sequence(tracker: Tracker, sequence: VideoSequence, max_frames: int = 0
                   ) -> Iterator[tuple[int, str, np.ndarray]]:
    """Yield (frame index, stem, predicted label map) of every frame of `sequence`.

    The tracker is seeded with the first frame's ground truth. max_frames: 0 = all.
    """
    count = len(sequence) if max_frames <= 0 else min(max_frames, len(sequence))
    seed = sequence.load_label_map(0)
    frames = ((sequence.frame_stem(i), sequence.load_frame(i)) for i in range(count))
    for index, (stem, _, result) in enumerate(segment_frames(tracker, frames, seed)):
        yield index, stem, result.labels


def score_sequences(tracker: Tracker, sequences: list[VideoSequence], max_frames: int = 0,
                    out_dir: Path | None = None,
                    log: Callable[[str], None] | None = None) -> dict:
    """Track every sequence, optionally write the PNGs, and score in memory.

    Sequences whose first frame is unannotated or shows no object are skipped (reported
    through `log`). Returns {sequence: evaluate_sequence(...)} over the annotated frames.
    """
    results = {}
    for sequence in sequences:
        first = sequence.load_label_map(0) if sequence.has_mask(0) else None
        if first is None or not clean_seed(first).any():
            if log is not None:
                log(f"skipping {sequence.name}: its first frame has no annotated object")
            continue
        started = time.perf_counter()
        predictions, truths = [], []
        for index, stem, labels in track_sequence(tracker, sequence, max_frames):
            if out_dir is not None:
                write_label_map(Path(out_dir) / sequence.name / f"{stem}.png", labels)
            if sequence.has_mask(index):
                predictions.append(labels)
                truths.append(sequence.load_label_map(index))
        results[sequence.name] = evaluate_sequence(predictions, truths)
        if log is not None:
            elapsed = time.perf_counter() - started
            log(f"{sequence.name}: {len(predictions)} frames in {elapsed:.1f} s")
    return results
