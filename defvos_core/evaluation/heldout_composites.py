"""Held-out composites: synthetic clips made only of held-out photographs, for choosing models.

The static stage's own clip synthesis (`defvos_core.data.static_clips`: a moving camera over
a scene, pasted objects with their own motion overlapping and occluding each other, blur,
colour) run on the held-out share of the still images (`defvos_core.data.still_images`),
never on DAVIS: every object in these clips is one that no training run has seen. The set
is fixed by code: clip i has 1 + i % MAX_OBJECTS objects (fewer when one ends up too small),
its scene and objects drawn from seed (seed, i); the same clips for every model.

    clips = heldout_composites(HeldoutCompositeConfig())
    report = score_composites(tracker, clips)   # {"J&F", "by_count": {k: J&F}, ...}
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from defvos_core.data.clip_dataset import ClipSamplingConfig
from defvos_core.data.static_clips import StaticClipConfig
from defvos_core.data.static_dataset import StaticClipDataset
from defvos_core.data.still_images import read_still_split
from defvos_core.evaluation.composites import CompositeClip
from defvos_core.evaluation.multi_object import object_jf, track
from defvos_core.inference.tracker import Tracker

MAX_OBJECTS = 5  # clip i has 1 + i % MAX_OBJECTS objects


@dataclass
class HeldoutCompositeConfig:
    """Which held-out composites: their number, length and frame size."""

    clips: int = 40
    frames: int = 12
    size: tuple[int, int] = (240, 320)  # (h, w) of every frame
    seed: int = 2026

    def __post_init__(self) -> None:
        if self.clips < 1 or self.frames < 3:
            raise ValueError(f"need clips >= 1 and frames >= 3, got {self.clips}, "
                             f"{self.frames}")


def heldout_composites(config: HeldoutCompositeConfig | None = None,
                       roots: list[str] | tuple[str, ...] = ()) -> list[CompositeClip]:
    """Return the fixed set of clips (module docstring) made of `roots`' held-out images."""
    config = config or HeldoutCompositeConfig()
    images = read_still_split(roots, "heldout")
    order = np.random.default_rng(config.seed).permutation(len(images))
    images = [images[i] for i in order]  # scenes from every folder, not the first one's
    clips = []
    for index in range(config.clips):
        count = 1 + index % MAX_OBJECTS
        sampling = ClipSamplingConfig(num_frames=config.frames, crop_size=config.size,
                                      max_objects=count, cache_frames=False)
        synthesis = StaticClipConfig(roots=list(roots), min_objects=count, max_objects=count,
                                     davis_objects=False)
        dataset = StaticClipDataset(images, sampling, synthesis, seed=config.seed)
        item = dataset[(0, index)]
        frames = (item["frames"].permute(0, 2, 3, 1) * 255.0).round().to(torch.uint8)
        clips.append(CompositeClip(
            f"{index:03d}-{item['num_objects']}obj-{item['name'].replace('/', '_')}",
            list(frames.numpy()), list(item["labels"].numpy().astype(np.uint8))))
    return clips


def score_composites(tracker: Tracker, clips: list[CompositeClip]) -> dict:
    """Track every clip from its first frame's labels; J&F per object, mean, by count."""
    per_object: list[tuple[str, int, int, float]] = []  # (clip, objects, id, J&F)
    frames_done, seconds = 0, 0.0
    for clip in clips:
        predictions, timing = track(tracker, clip.frames, clip.labels[0])
        frames_done, seconds = frames_done + timing.frames, seconds + timing.wall_s
        scores = object_jf(predictions, clip.labels)
        for object_id, value in scores.items():
            per_object.append((clip.name, len(scores), object_id, float(value)))
    by_count: dict[int, list[float]] = {}
    for _, count, _, value in per_object:
        by_count.setdefault(count, []).append(value)
    multi = [value for _, count, _, value in per_object if count > 1]
    return {"J&F": float(np.mean([row[3] for row in per_object])),
            "J&F_multi": float(np.mean(multi)) if multi else float("nan"),
            "by_count": {count: float(np.mean(values))
                         for count, values in sorted(by_count.items())},
            "objects": len(per_object), "clips": len(clips),
            "ms_per_frame": 1000.0 * seconds / max(1, frames_done),
            "per_object": [{"clip": c, "objects": k, "id": i, "J&F": v}
                           for c, k, i, v in per_object]}
