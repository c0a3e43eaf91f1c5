"""Teacher pseudo-labels for self-supervised distillation.

Semi-supervised VOS cannot start without a first-frame mask, so "self-supervised" here
means: the only ground truth the student's data ever holds is each video's first annotated
frame (the seed, as at inference). The frozen teacher tracks every training video from that
seed; its predicted label maps replace all later annotations. Clips drawn from such a
sequence take their first-frame mask from the teacher (or the true seed when the clip
starts at the seed frame), and the loss uses the teacher's logits only.

Footage with no first-frame mask at all is skipped (counted and logged): there is nothing
to say which objects to segment.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np

from defvos_core.data.masks import write_label_map
from defvos_core.data.sequences import VideoSequence
from defvos_core.inference.tracker import Tracker
from defvos_core.inference.video import segment_frames


def pseudo_label_sequences(tracker: Tracker, sequences: list[VideoSequence], cache_dir: Path,
                           tag: str, log: Callable[[str], None] = print
                           ) -> tuple[list[VideoSequence], int]:
    """Sequences whose masks are the seed frame's ground truth + the teacher's predictions.

    The seed is the first annotated frame; frames before it are dropped. Label maps are
    written once to `cache_dir/<tag hash>/<sequence>/<stem>.png` and reused (a `.complete`
    marker per sequence). Returns (pseudo-labelled sequences, number skipped for lack of
    a seed).
    """
    root = Path(cache_dir) / hashlib.sha1(tag.encode()).hexdigest()[:12]
    labelled, skipped = [], 0
    for sequence in sequences:
        if not sequence.is_labeled:
            skipped += 1
            log(f"self-supervised: skipping {sequence.name!r}: no first-frame mask to seed it")
            continue
        start = sequence.labeled_indices[0]
        seed = sequence.load_label_map(start).copy()
        seed[seed == 255] = 0
        if not np.any(seed):
            skipped += 1
            log(f"self-supervised: skipping {sequence.name!r}: its seed mask shows no object")
            continue
        frame_paths = sequence.frame_paths[start:]
        target = root / sequence.name
        if not (target / ".complete").is_file():
            frames = ((path.stem, sequence.load_frame(start + i))
                      for i, path in enumerate(frame_paths))
            for index, (stem, _, result) in enumerate(segment_frames(tracker, frames, seed)):
                labels = seed if index == 0 else result.labels
                write_label_map(target / f"{stem}.png", labels)
            (target / ".complete").touch()
            log(f"self-supervised: teacher labelled {sequence.name} ({len(frame_paths)} frames)")
        masks = {i: target / f"{path.stem}.png" for i, path in enumerate(frame_paths)}
        labelled.append(VideoSequence(sequence.name, list(frame_paths), masks))
    return labelled, skipped
