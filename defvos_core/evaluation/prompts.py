"""Measure box / click seeding: seed-frame IoU alone, and J&F of the tracking it starts.

Prompts are drawn from the ground truth with fixed seeds (`gt_prompts`), kinds:
- `box`: the tight box of each object (a good detector);
- `box_jitter`: each edge moved by up to +-10 % of the box side;
- `click`: one positive click, deepest inside the object;
- `clicks`: 1-3 positive clicks away from the boundary + 0-2 negatives near the object.
Methods are `PROMPT_METHODS` ("head", "grabcut", ... with or without "+refine"); "mask" is
the ground-truth seed (the reference) and "corner" a control that seeds each object as a
20x20 patch in a corner of the frame (not on the object): how much tracking depends on the
seed at all. Everything runs through `PromptSeeder` and the tracker, the same code as
`Tracker.add_objects(frame, boxes=..., points=...)`.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from defvos_core.config import PromptConfig
from defvos_core.data.ecssd import StaticImage, load_static_image
from defvos_core.data.prompt_sampling import center_click, jitter_box, mask_box, sample_clicks
from defvos_core.evaluation.metrics import evaluate_sequence, region_jaccard, summarize
from defvos_core.inference.prompts import PromptSeeder, SeedPrompts, check_prompts
from defvos_core.inference.seeds import clean_seed
from defvos_core.inference.tracker import Tracker
from defvos_core.inference.video import segment_frames

PROMPT_KINDS = ("box", "box_jitter", "click", "clicks")
MASK = "mask"  # the ground-truth seed
CORNER = "corner"  # control: each object seeded as a patch in a frame corner
SEEDS = (MASK, CORNER)  # seeds that take no prompt
CORNER_SIZE = 20


def gt_prompts(labels: np.ndarray, kind: str, key: str) -> SeedPrompts:
    """Prompts of `kind` for every object of a ground-truth label map (seeded by `key`)."""
    seed = clean_seed(labels)
    rng = np.random.default_rng(zlib.crc32(f"{key}|{kind}".encode()))
    boxes, points = {}, {}
    for object_id in (int(i) for i in np.unique(seed) if i):
        mask = seed == object_id
        if kind == "box":
            boxes[object_id] = mask_box(mask)
        elif kind == "box_jitter":
            boxes[object_id] = jitter_box(mask_box(mask), mask.shape, rng)
        elif kind == "click":
            points[object_id] = [center_click(mask)]
        elif kind == "clicks":
            points[object_id] = sample_clicks(mask, rng)
        else:
            raise ValueError(f"unknown prompt kind {kind!r}; expected one of {PROMPT_KINDS}")
    return check_prompts(boxes, points, seed.shape)


def applies(method: str, kind: str) -> bool:
    """Whether `method` can turn prompts of `kind` into a mask ("rect" needs a box)."""
    return method in SEEDS or not (method.startswith("rect") and not kind.startswith("box"))


def seeder_for(tracker: Tracker, method: str) -> PromptSeeder:
    """Return a `PromptSeeder` on the tracker's backend, `method` for both prompt kinds."""
    points_method = "head" if method.startswith("rect") else method
    config = dataclasses.replace(tracker.config,
                                 prompts=PromptConfig(box_method=method,
                                                      points_method=points_method))
    return PromptSeeder(tracker.backend, config)


def seed_labels(tracker: Tracker, frame: np.ndarray, truth: np.ndarray, kind: str,
                method: str, key: str) -> np.ndarray:
    """Return the seed label map `method` makes from `kind` prompts (the truth: "mask")."""
    if method == MASK:
        return clean_seed(truth)
    if method == CORNER:
        return corner_seed(truth)
    return seeder_for(tracker, method).label_map(frame, None, gt_prompts(truth, kind, key))


def corner_seed(truth: np.ndarray) -> np.ndarray:
    """Seed each object of `truth` as a CORNER_SIZE patch in a corner (top-left first)."""
    seed = np.zeros(truth.shape, np.int64)
    height, width = truth.shape
    ids = [int(i) for i in np.unique(clean_seed(truth)) if i]
    for corner, object_id in enumerate(ids):
        top = 0 if corner % 4 < 2 else height - CORNER_SIZE
        left = 0 if corner % 2 == 0 else width - CORNER_SIZE
        seed[top:top + CORNER_SIZE, left:left + CORNER_SIZE] = object_id
    return seed


def mean_object_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean over the truth's objects of the IoU of each object's predicted mask."""
    truth = clean_seed(truth)
    ids = [int(i) for i in np.unique(truth) if i]
    return float(np.mean([region_jaccard(predicted == i, truth == i) for i in ids]))


@dataclass
class Row:
    """Results of one (method, kind) over a set of images or videos."""

    seed_iou: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # prompt -> mask, per seed frame
    tracks: dict = field(default_factory=dict)  # {video: evaluate_sequence(...)}

    def summary(self) -> dict:
        """Mean seed IoU, seconds per seed and (when tracked) J&F."""
        result = {"seed_iou": float(np.mean(self.seed_iou)), "n": len(self.seed_iou),
                  "seed_ms": 1000 * float(np.mean(self.seconds))}
        if self.tracks:
            scores = summarize(self.tracks)
            result.update({"J&F": scores["J&F-Mean"], "J": scores["J-Mean"],
                           "F": scores["F-Mean"], "objects": scores["n_objects"],
                           "per_video": {k: v["J&F"] for k, v in scores["sequences"].items()}})
        return result


def record_seed(rows: dict[tuple[str, str], Row], tracker: Tracker, frame: np.ndarray,
                truth: np.ndarray, kind: str, method: str, key: str) -> np.ndarray:
    """Make the (method, kind) seed of `frame`; add its time and IoU to its row; return it."""
    started = time.perf_counter()
    seed = seed_labels(tracker, frame, truth, kind, method, key)
    row = rows.setdefault((method, kind), Row())
    row.seconds.append(time.perf_counter() - started)
    row.seed_iou.append(mean_object_iou(seed, truth))
    return seed


def score_stills(tracker: Tracker, stills: list[StaticImage], kinds: Iterable[str],
                 methods: Iterable[str]) -> dict[tuple[str, str], Row]:
    """Seed-frame IoU of every (method, kind) on still images (no tracking)."""
    rows: dict[tuple[str, str], Row] = {}
    for still in stills:
        image, truth = load_static_image(still)
        for kind in kinds:
            for method in methods:
                if method in SEEDS or not applies(method, kind):
                    continue
                record_seed(rows, tracker, image, truth, kind, method, still.name)
    return rows


@dataclass
class Clip:
    """A video to track: name, frame loader, ground truth per frame."""

    name: str
    length: int
    frame: Callable[[int], np.ndarray]  # index -> (H, W, 3) uint8 RGB
    truth: Callable[[int], np.ndarray]  # index -> (H, W) label map


def track_clip(tracker: Tracker, clip: Clip, seed: np.ndarray) -> dict:
    """Track `clip` from a seed label map of its first frame; evaluate_sequence(...)."""
    frames = ((f"{index:05d}", clip.frame(index)) for index in range(clip.length))
    predictions = [result.labels for _, _, result in segment_frames(tracker, frames, seed)]
    return evaluate_sequence(predictions, [clip.truth(i) for i in range(clip.length)])


def score_clips(tracker: Tracker, clips: list[Clip], kinds: Iterable[str],
                methods: Iterable[str], log: Callable[[str], None] | None = None
                ) -> dict[tuple[str, str], Row]:
    """Seed IoU and J&F of tracking each clip from every (method, kind) seed."""
    rows: dict[tuple[str, str], Row] = {}
    for clip in clips:
        frame, truth = clip.frame(0), clip.truth(0)
        for method in methods:
            for kind in ([method] if method in SEEDS else kinds):
                if not applies(method, kind):
                    continue
                seed = record_seed(rows, tracker, frame, truth, kind, method, clip.name)
                rows[method, kind].tracks[clip.name] = track_clip(tracker, clip, seed)
        if log is not None:
            log(f"{clip.name}: done")
    return rows


def merge_rows(parts: Iterable[dict[tuple[str, str], Row]]) -> dict[tuple[str, str], Row]:
    """Pool rows of several folds (each video / image in exactly one)."""
    merged: dict[tuple[str, str], Row] = {}
    for part in parts:
        for key, row in part.items():
            target = merged.setdefault(key, Row())
            target.seed_iou += row.seed_iou
            target.seconds += row.seconds
            target.tracks.update(row.tracks)
    return merged


def format_table(rows: dict[tuple[str, str], Row], title: str) -> str:
    """Format a table: method, prompt kind, seed IoU, J&F (J, F) when tracked, ms."""
    lines = [title, f"{'method':<16}{'prompt':<12}{'n':>5}{'seed IoU':>10}{'J&F':>8}{'J':>8}"
             f"{'F':>8}{'ms/seed':>9}"]
    for (method, kind), row in sorted(rows.items(), key=lambda item: (item[0][1], item[0][0])):
        summary = row.summary()
        tracked = "".join(f"{summary[key]:>8.3f}" for key in ("J&F", "J", "F")) \
            if "J&F" in summary else f"{'-':>8}" * 3
        lines.append(f"{method:<16}{kind:<12}{summary['n']:>5}{summary['seed_iou']:>10.3f}"
                     f"{tracked}{summary['seed_ms']:>9.0f}")
    return "\n".join(lines)
