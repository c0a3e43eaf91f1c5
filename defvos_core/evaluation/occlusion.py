"""Lost and found: an occluded object reported absent, and found again when it returns.

Protocol (synthetic full occlusions of real clips): in each sequence, from frame
``start_fraction * length`` on, for ``N`` frames, a textured occluder (a patch cut from another
sequence's frame) covers the object's bounding box, dilated by ``margin`` of its size, so the
object is fully hidden; its ground truth there is "absent". The tracker is seeded with the
first frame's ground truth and runs over the edited clip. Reported per occlusion length:

- false presence: fraction of fully occluded frames in which the tracker still reports the
  object present (`TrackResult.presence`, the rule of `defvos_core.inference.presence`) —
  a hallucination somewhere else;
- re-detection rate: fraction of sequences in which, within ``window_after`` frames after the
  occluder leaves, the object is found again with IoU >= ``redetect_iou``;
- re-detection delay: frames from the occluder leaving to that first good frame (median and
  mean over the re-detected sequences);
- J after: mean IoU over the ``window_after`` frames after the occlusion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from defvos_core.data.sequences import VideoSequence
from defvos_core.evaluation.metrics import region_jaccard
from defvos_core.inference.tracker import Tracker
from defvos_core.inference.video import segment_frames


@dataclass
class OcclusionConfig:
    """Where and how long the synthetic occlusions are, and what counts as found."""

    lengths: tuple[int, ...] = (5, 10, 20)  # frames fully occluded
    start_fraction: float = 0.3  # occlusion starts this far into the sequence
    margin: float = 0.15  # occluder = object box grown by this fraction of its size per side
    redetect_iou: float = 0.5
    window_after: int = 15  # frames after the occlusion in which it must be found again
    seed: int = 0  # which patches are cut for the occluders


@dataclass
class OcclusionResult:
    """One sequence, one occlusion length."""

    sequence: str
    length: int
    false_presence: float  # fraction of occluded frames with the object reported
    redetected: bool
    delay: int | None  # frames after the occluder left until IoU >= redetect_iou
    iou_after: float  # mean IoU over the frames after the occlusion
    frames_after: int = 0


@dataclass
class OcclusionSummary:
    """Results of every sequence at one length, and their aggregate."""

    length: int
    results: list[OcclusionResult] = field(default_factory=list)

    @property
    def false_presence(self) -> float:
        return float(np.mean([r.false_presence for r in self.results]))

    @property
    def redetection_rate(self) -> float:
        return float(np.mean([r.redetected for r in self.results]))

    @property
    def delays(self) -> list[int]:
        return [r.delay for r in self.results if r.delay is not None]

    @property
    def iou_after(self) -> float:
        return float(np.mean([r.iou_after for r in self.results]))


def object_box(mask: np.ndarray, margin: float) -> tuple[int, int, int, int] | None:
    """Return the (top, left, bottom, right) box of a mask grown by ``margin``, or None."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    grow_y = int(np.ceil((bottom - top) * margin))
    grow_x = int(np.ceil((right - left) * margin))
    height, width = mask.shape
    return (max(0, top - grow_y), max(0, left - grow_x), min(height, bottom + grow_y),
            min(width, right + grow_x))


def occlude(frame: np.ndarray, mask: np.ndarray, texture: np.ndarray,
            margin: float) -> np.ndarray:
    """Return ``frame`` with the object's grown box covered by ``texture`` (tiled to fit)."""
    box = object_box(mask, margin)
    if box is None:
        return frame
    top, left, bottom, right = box
    height, width = bottom - top, right - left
    reps = (-(-height // texture.shape[0]), -(-width // texture.shape[1]), 1)
    edited = frame.copy()
    edited[top:bottom, left:right] = np.tile(texture, reps)[:height, :width]
    return edited


def run_occlusion(tracker: Tracker, sequence: VideoSequence, texture: np.ndarray,
                  length: int, config: OcclusionConfig) -> OcclusionResult | None:
    """Track one sequence with an occlusion of ``length`` frames; None if it is too short."""
    frames = [sequence.load_frame(i) for i in range(len(sequence))]
    truth = [sequence.load_label_map(i) if sequence.has_mask(i) else None
             for i in range(len(sequence))]
    start = max(1, int(round(config.start_fraction * len(frames))))
    stop = start + length
    if stop + 2 > len(frames) or truth[0] is None:
        return None
    edited = list(frames)
    for index in range(start, stop):
        if truth[index] is not None:
            edited[index] = occlude(frames[index], truth[index] > 0, texture, config.margin)
    seen_during, ious_after, delay = [], [], None
    stems = ((str(i), frame) for i, frame in enumerate(edited))
    for index, (_, _, result) in enumerate(segment_frames(tracker, stems, truth[0])):
        present = any(state.present for state in result.presence.values())
        if start <= index < stop:
            seen_during.append(present)
        elif stop <= index < stop + config.window_after and truth[index] is not None:
            iou = region_jaccard(result.labels > 0, truth[index] > 0)
            ious_after.append(iou)
            if delay is None and iou >= config.redetect_iou:
                delay = index - stop
    return OcclusionResult(sequence.name, length, float(np.mean(seen_during)),
                           delay is not None, delay,
                           float(np.mean(ious_after)) if ious_after else 0.0,
                           len(ious_after))


def texture_from(sequence: VideoSequence, size: int, rng: np.random.Generator) -> np.ndarray:
    """Return a ``size`` x ``size`` patch of a random frame of another sequence."""
    frame = sequence.load_frame(int(rng.integers(len(sequence))))
    height, width = frame.shape[:2]
    size = min(size, height, width)
    top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
    return np.ascontiguousarray(frame[top:top + size, left:left + size])


def evaluate_occlusions(tracker: Tracker, sequences: list[VideoSequence],
                        texture_sources: list[VideoSequence],
                        config: OcclusionConfig | None = None) -> list[OcclusionSummary]:
    """Run every sequence at every occlusion length; one summary per length.

    Occluder textures are cut from ``texture_sources`` (other sequences than the one
    occluded, chosen by ``config.seed``).
    """
    config = config or OcclusionConfig()
    rng = np.random.default_rng(config.seed)
    summaries = [OcclusionSummary(length) for length in config.lengths]
    for sequence in sequences:
        others = [s for s in texture_sources if s.name != sequence.name] or texture_sources
        texture = texture_from(others[int(rng.integers(len(others)))], 96, rng)
        for summary in summaries:
            result = run_occlusion(tracker, sequence, texture, summary.length, config)
            if result is not None:
                summary.results.append(result)
    return summaries


def format_summaries(summaries: list[OcclusionSummary]) -> str:
    """Return a plain-text table of the summaries."""
    lines = ['occluded frames  sequences  false presence  re-detected  delay median/mean  '
             'IoU after']
    for summary in summaries:
        if not summary.results:
            continue
        delays = summary.delays
        delay = (f'{np.median(delays):5.1f} / {np.mean(delays):4.1f}' if delays
                 else '    n/a     ')
        lines.append(f'{summary.length:15d}  {len(summary.results):9d}  '
                     f'{summary.false_presence:14.2f}  {summary.redetection_rate:11.2f}  '
                     f'{delay:>17}  {summary.iou_after:9.3f}')
    return '\n'.join(lines)
