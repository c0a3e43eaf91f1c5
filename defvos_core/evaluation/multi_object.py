"""Several objects at once: multi-object clips composited from single-object sequences.

Protocol (deterministic, no randomness): a clip of K objects is built from K sequences of a
split, (s1, ..., sK) = K consecutive names of the split, cyclically, one clip starting at
each name (or at `clips` evenly spaced ones). s1 is the scene and its own object stays as
object 1; the object of each of s2..sK is cut out with its mask frame by frame (cropped to
its box over the clip, as `data.static_clips.cut_out`, so it keeps its own motion and shape
changes), scaled, and moved over the scene as object 2..K: it starts where it overlaps the
objects placed before it least in frame 0, and drifts at `speed` px a frame in its own
direction, bouncing off the frame's edges. Later objects occlude earlier ones; the ground
truth is the composited label maps. Clips are at most `max_frames` long.

Scores (DAVIS J&F per object, `evaluation.metrics`):
- multi: every object of the clip tracked together, seeded with the clip's first label map;
- single: the same object tracked alone: object 1 on its own, unedited sequence, a pasted
  object on the composited clip seeded with its own mask only (the other objects are then
  unlabelled salient objects it may jump to);
- own: every object tracked alone on its own, unedited sequence (its natural size, no
  distractors pasted in): a baseline that does not depend on the compositing.
The ratios multi / single and multi / own of the means over the same objects say what
tracking several objects at once costs. Single scores do not depend on `slots_per_bank`
(one object always takes bank 0, slot 1), so they are computed once for every setting.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import cv2
import numpy as np

from defvos_core.config import VOID_LABEL, TrackerConfig
from defvos_core.data.sequences import VideoSequence
from defvos_core.data.static_clips import LayerSource, cut_out, paste_layer
from defvos_core.data.warps import Pose
from defvos_core.evaluation.metrics import db_statistics, evaluate_sequence
from defvos_core.inference.backend import Backend
from defvos_core.inference.objects import ObjectManager
from defvos_core.inference.tracker import Tracker
from defvos_core.inference.video import segment_frames

GOLDEN_ANGLE = math.pi * (3 - math.sqrt(5))  # successive objects drift in spread directions


@dataclass
class MultiObjectConfig:
    """How the clips are composited."""

    max_frames: int = 40  # clip length bound (the shortest sequence of a clip also bounds it)
    # Longer side of a pasted object's box over the clip, as a fraction of the frame's short
    # side, for 2 objects; divided by (K - 1) ** 0.25 for K objects, so many still fit.
    object_size: float = 0.55
    speed: float = 1.5  # drift of the pasted objects, px per frame
    clearance: int = 8  # px kept around placed objects when choosing where the next starts

    def __post_init__(self) -> None:
        if self.max_frames < 3:
            raise ValueError(f"max_frames must be >= 3 (J&F skips the first and last frames), "
                             f"got {self.max_frames}")
        if not 0 < self.object_size <= 1:
            raise ValueError(f"object_size must be in (0, 1], got {self.object_size}")


@dataclass
class MultiObjectClip:
    """A composited clip: object k comes from sequence `sources[k - 1]` (1: the scene)."""

    name: str
    sources: tuple[str, ...]
    frames: list[np.ndarray]  # (H, W, 3) uint8 RGB
    labels: list[np.ndarray]  # (H, W) uint8: 0 background, 1..K objects, 255 void


def clip_tuples(names: Sequence[str], num_objects: int, clips: int = 0
                ) -> list[tuple[str, ...]]:
    """Source tuples: `num_objects` consecutive names (cyclic), starting at each name.

    clips: 0 = one clip per name; otherwise that many, starting at evenly spaced names.
    """
    if not 1 <= num_objects <= len(names):
        raise ValueError(f"{num_objects} objects need as many distinct sequences; the split "
                         f"has {len(names)}")
    starts = range(len(names))
    if 0 < clips < len(names):
        starts = [int(i * len(names) / clips) for i in range(clips)]
    return [tuple(names[(start + k) % len(names)] for k in range(num_objects))
            for start in starts]


def object_mask(labels: np.ndarray) -> np.ndarray:
    """(H, W) uint8 {0, 1}: the annotated object(s) of a single-object label map, void excluded."""
    return ((labels > 0) & (labels != VOID_LABEL)).astype(np.uint8)


def _bounce(start: float, travel: float, span: float) -> float:
    """Position `travel` px on from `start` in [0, span], reflected at both ends."""
    if span <= 0:
        return 0.0
    position = (start + travel) % (2 * span)
    return position if position <= span else 2 * span - position


def _translation(left: float, top: float) -> Pose:
    homography = np.array([[1.0, 0.0, left], [0.0, 1.0, top], [0.0, 0.0, 1.0]])
    return Pose(homography, np.zeros((9, 2)))


def _start(mask: np.ndarray, occupied: np.ndarray, centres: list[np.ndarray]
           ) -> tuple[int, int]:
    """Top-left (left, top) of a patch whose frame-0 `mask` overlaps `occupied` least.

    Candidates lie on a 7 x 4 grid of positions keeping the patch inside the frame; ties go
    to the one farthest from the objects placed before (their centres).
    """
    height, width = occupied.shape
    patch_h, patch_w = mask.shape
    rows, cols = np.nonzero(mask)
    centre = np.array([cols.mean(), rows.mean()]) if rows.size else np.array(
        [patch_w / 2, patch_h / 2])
    best, best_key = (0, 0), None
    for top in np.linspace(0, max(0, height - patch_h), 4).round().astype(int):
        for left in np.linspace(0, max(0, width - patch_w), 7).round().astype(int):
            window = occupied[top:top + patch_h, left:left + patch_w]
            overlap = int(np.count_nonzero(window & mask[:window.shape[0], :window.shape[1]]))
            here = centre + (left, top)
            distance = min((float(np.hypot(*(here - c))) for c in centres), default=0.0)
            key = (overlap, -distance)
            if best_key is None or key < best_key:
                best, best_key = (int(left), int(top)), key
    return best


def compose_clip(sequences: Sequence[VideoSequence], config: MultiObjectConfig | None = None
                 ) -> MultiObjectClip:
    """Composite the object of `sequences[1:]` over `sequences[0]` (see the module docstring)."""
    config = config or MultiObjectConfig()
    scene = sequences[0]
    length = min([config.max_frames] + [len(s) for s in sequences])
    frames = [scene.load_frame(t) for t in range(length)]
    labels = [object_mask(scene.load_label_map(t)) for t in range(length)]
    for t, label in enumerate(labels):  # keep the scene's void, if any
        label[scene.load_label_map(t) == VOID_LABEL] = VOID_LABEL
    height, width = labels[0].shape
    size = config.object_size * min(height, width) / max(1, len(sequences) - 1) ** 0.25
    kernel = np.ones((2 * config.clearance + 1,) * 2, np.uint8)
    occupied = cv2.dilate(labels[0] == 1, kernel).astype(bool) if config.clearance else \
        labels[0] == 1
    rows, cols = np.nonzero(labels[0] == 1)
    centres = [np.array([cols.mean(), rows.mean()])] if rows.size else []
    rng = np.random.default_rng(0)  # cut_out's jitter only; unused (jitter=False)
    for object_id, source in enumerate(sequences[1:], start=2):
        layer = cut_out(LayerSource([source.load_frame(t) for t in range(length)],
                                    [object_mask(source.load_label_map(t))
                                     for t in range(length)]),
                        size, rng, flip=False, jitter=False)
        if layer is None:
            raise ValueError(f"sequence {source.name!r} shows no object in its first "
                             f"{length} frames")
        first = layer.masks[0] > 0
        left, top = _start(first, occupied, centres)
        angle = math.pi / 6 + GOLDEN_ANGLE * (object_id - 2)
        step = (config.speed * math.cos(angle), config.speed * math.sin(angle))
        span = (width - first.shape[1], height - first.shape[0])
        poses = [_translation(_bounce(left, step[0] * t, span[0]),
                              _bounce(top, step[1] * t, span[1])) for t in range(length)]
        paste_layer(frames, labels, layer, poses, object_id)
        placed = np.zeros_like(occupied)
        placed[top:top + first.shape[0], left:left + first.shape[1]] = first
        occupied |= cv2.dilate(placed.astype(np.uint8), kernel).astype(bool) \
            if config.clearance else placed
        rows, cols = np.nonzero(first)
        if rows.size:
            centres.append(np.array([cols.mean() + left, rows.mean() + top]))
    names = tuple(s.name for s in sequences)
    return MultiObjectClip("+".join(names), names, frames, labels)


# ----------------------------------------------------------------------------- scoring
@dataclass
class Timing:
    """Frames tracked and the time they took (tracker calls only)."""

    frames: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0  # process CPU time: less disturbed by other work on the machine

    def add(self, other: Timing) -> None:
        self.frames += other.frames
        self.wall_s += other.wall_s
        self.cpu_s += other.cpu_s


def track(tracker: Tracker, frames: Sequence[np.ndarray], seed: np.ndarray
          ) -> tuple[list[np.ndarray], Timing]:
    """Track `frames` from `seed` (the CLI's code path); the label maps and the time taken."""
    predictions = []
    wall, cpu = time.perf_counter(), time.process_time()
    stems = ((str(index), frame) for index, frame in enumerate(frames))
    for _, _, result in segment_frames(tracker, stems, seed):
        predictions.append(result.labels)
    return predictions, Timing(len(frames), time.perf_counter() - wall,
                               time.process_time() - cpu)


def object_jf(predictions: Sequence[np.ndarray], truths: Sequence[np.ndarray]
              ) -> dict[int, float]:
    """J&F (mean J + mean F, halved) of every object of the first ground-truth frame."""
    scores = evaluate_sequence(predictions, truths)
    return {object_id: (db_statistics(s["J"])[0] + db_statistics(s["F"])[0]) / 2
            for object_id, s in scores.items()}


def _binary(labels: Sequence[np.ndarray], object_id: int) -> list[np.ndarray]:
    return [(label == object_id).astype(np.uint8) for label in labels]


@dataclass
class ObjectScore:
    """One object of one clip."""

    clip: str
    object_id: int
    source: str  # the sequence the object comes from
    bank: int  # where the multi-object run kept it
    slot: int
    multi: float  # J&F tracked with the clip's other objects
    single: float  # J&F tracked alone (object 1: its own sequence; others: on the clip)
    own: float  # J&F tracked alone on its own, unedited sequence


@dataclass
class MultiObjectResult:
    """Every clip of one object count, tracked with one `slots_per_bank`."""

    num_objects: int
    slots_per_bank: int  # slots used per bank (after the model's bound)
    banks: int  # identity banks the objects took
    objects: list[ObjectScore] = field(default_factory=list)
    timing: Timing = field(default_factory=Timing)  # the multi-object runs

    @property
    def multi(self) -> float:
        return float(np.mean([o.multi for o in self.objects]))

    @property
    def single(self) -> float:
        return float(np.mean([o.single for o in self.objects]))

    @property
    def own(self) -> float:
        return float(np.mean([o.own for o in self.objects]))

    @property
    def ratio(self) -> float:
        return self.multi / self.single if self.single else float("nan")

    @property
    def ratio_own(self) -> float:
        return self.multi / self.own if self.own else float("nan")

    @property
    def clips(self) -> int:
        return len({o.clip for o in self.objects})

    def ms_per_frame(self, cpu: bool = False) -> float:
        seconds = self.timing.cpu_s if cpu else self.timing.wall_s
        return 1000 * seconds / max(1, self.timing.frames)


class SingleScores:
    """Single-object J&F, computed once per (object, clip length) and reused."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self._scores: dict[tuple, float] = {}
        self.timing = Timing()

    def own_sequence(self, sequence: VideoSequence, length: int) -> float:
        """Track a sequence's object alone over its first `length` frames; its J&F."""
        key = ("own", sequence.name, length)
        if key not in self._scores:
            frames = [sequence.load_frame(t) for t in range(length)]
            truths = [object_mask(sequence.load_label_map(t)) for t in range(length)]
            self._scores[key] = self._score(frames, truths)
        return self._scores[key]

    def pasted_object(self, clip: MultiObjectClip, object_id: int) -> float:
        """Pasted object `object_id` alone on the composited clip (its own seed only)."""
        key = ("pasted", clip.name, len(clip.frames), object_id)
        if key not in self._scores:
            self._scores[key] = self._score(clip.frames, _binary(clip.labels, object_id))
        return self._scores[key]

    def _score(self, frames: Sequence[np.ndarray], truths: list[np.ndarray]) -> float:
        predictions, timing = track(self.tracker, frames, truths[0])
        self.timing.add(timing)
        return object_jf(predictions, truths)[1]


def evaluate_multi_object(backend: Backend, config: TrackerConfig,
                          sequences: dict[str, VideoSequence], counts: Sequence[int],
                          slots_per_bank: Sequence[int], clips: int = 0,
                          clip_config: MultiObjectConfig | None = None,
                          log: Callable[[str], None] | None = None, with_single: bool = True
                          ) -> tuple[list[MultiObjectResult], SingleScores]:
    """Score multi vs single tracking for each object count and `slots_per_bank` value.

    sequences: the split, by name, in order (clip sources: `clip_tuples`); config: the
    tracker settings (its `slots_per_bank` replaced by each value compared). Returns the
    results (count-major) and the single-object scores (with their timing).
    with_single=False skips the single-object runs (NaN): they are the same for every
    setting, so comparing settings needs only the multi-object scores.
    """
    clip_config = clip_config or MultiObjectConfig()
    trackers = {n: Tracker(backend, replace(config, slots_per_bank=n)) for n in slots_per_bank}
    singles = SingleScores(Tracker(backend, config))
    names = list(sequences)
    results = []
    for count in counts:
        count_results = {n: MultiObjectResult(count, tracker.slots_per_bank,
                                              -(-count // tracker.slots_per_bank))
                         for n, tracker in trackers.items()}
        for sources in clip_tuples(names, count, clips):
            clip = compose_clip([sequences[name] for name in sources], clip_config)
            hidden = [k for k in range(1, count + 1) if not (clip.labels[0] == k).any()]
            if hidden:
                if log is not None:
                    log(f"skipping {clip.name}: objects {hidden} hidden in its first frame")
                continue
            single = {k: float("nan") for k in range(1, count + 1)}
            own = dict(single)
            if with_single:
                own = {k: singles.own_sequence(sequences[sources[k - 1]], len(clip.frames))
                       for k in range(1, count + 1)}
                single[1] = own[1]
                single.update({k: singles.pasted_object(clip, k) for k in range(2, count + 1)})
            runs: dict[tuple, tuple[dict[int, float], Timing]] = {}
            for n, tracker in trackers.items():
                # Settings that give every object the same slot run the same computation.
                layout = tuple(_layout(tracker.slots_per_bank, count))
                if layout not in runs:
                    predictions, timing = track(tracker, clip.frames, clip.labels[0])
                    assert [tracker.objects.slot_of(k) for k in range(1, count + 1)] == \
                        list(layout), "the tracker assigned other slots than _layout"
                    runs[layout] = object_jf(predictions, clip.labels), timing
                multi, timing = runs[layout]
                result = count_results[n]
                result.timing.add(timing)
                for k in range(1, count + 1):
                    bank, slot = layout[k - 1]
                    result.objects.append(ObjectScore(clip.name, k, sources[k - 1], bank, slot,
                                                      multi.get(k, 0.0), single[k], own[k]))
                if log is not None:
                    log(f"{clip.name} ({len(clip.frames)} frames), slots_per_bank "
                        f"{tracker.slots_per_bank}: multi "
                        + " ".join(f"{multi.get(k, 0.0):.3f}" for k in range(1, count + 1))
                        + " | single " + " ".join(f"{single[k]:.3f}"
                                                  for k in range(1, count + 1))
                        + " | own " + " ".join(f"{own[k]:.3f}" for k in range(1, count + 1)))
        results.extend(count_results.values())
    return results, singles


def _layout(slots_per_bank: int, count: int) -> list[tuple[int, int]]:
    """(bank, slot) of objects 1..count added at once with `slots_per_bank` slots a bank."""
    manager = ObjectManager(slots_per_bank)
    return [manager.add(object_id) for object_id in range(1, count + 1)]


def format_results(results: Sequence[MultiObjectResult]) -> str:
    """Table: per object count and slots_per_bank, J&F multi and single, ratio, ms/frame."""
    lines = ["objects  slots/bank  banks  clips  J&F multi  single  ratio    own  ratio  "
             "wall ms/frame  cpu ms/frame"]
    for r in results:
        lines.append(f"{r.num_objects:7d}  {r.slots_per_bank:10d}  {r.banks:5d}  {r.clips:5d}  "
                     f"{r.multi:9.3f}  {r.single:6.3f}  {r.ratio:5.3f}  {r.own:5.3f}  "
                     f"{r.ratio_own:5.3f}  {r.ms_per_frame():13.0f}  "
                     f"{r.ms_per_frame(cpu=True):12.0f}")
    return "\n".join(lines)


def by_slot(results: Sequence[MultiObjectResult]) -> dict[int, dict[int, dict[str, float]]]:
    """{slots_per_bank: {slot: multi, single, own, ratio, objects}} pooled over counts."""
    table: dict[int, dict[int, list[ObjectScore]]] = {}
    for r in results:
        for o in r.objects:
            table.setdefault(r.slots_per_bank, {}).setdefault(o.slot, []).append(o)
    out: dict[int, dict[int, dict[str, float]]] = {}
    for n, slots in table.items():
        out[n] = {}
        for slot, objects in sorted(slots.items()):
            multi = float(np.mean([o.multi for o in objects]))
            single = float(np.mean([o.single for o in objects]))
            own = float(np.mean([o.own for o in objects]))
            out[n][slot] = {"multi": multi, "single": single, "own": own,
                            "ratio": multi / single if single else float("nan"),
                            "objects": len(objects)}
    return out


def format_by_slot(results: Sequence[MultiObjectResult]) -> str:
    """Table: J&F multi / single by the ID slot the objects took (all counts pooled)."""
    lines = ["slots/bank  slot  objects  J&F multi  single    own"]
    for n, slots in by_slot(results).items():
        for slot, row in slots.items():
            lines.append(f"{n:10d}  {slot:4d}  {row['objects']:7d}  {row['multi']:9.3f}  "
                         f"{row['single']:6.3f}  {row['own']:5.3f}")
    return "\n".join(lines)
