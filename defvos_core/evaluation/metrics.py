"""DAVIS region (J) and boundary (F) measures, per-object statistics and the benchmark summary.

Semantics follow the official davis2017-evaluation code (semi-supervised task): J is the
Jaccard index, F the boundary F-measure with a disk tolerance of 0.8 % of the image
diagonal, frames [1:-1] are scored, and statistics are taken per object.
"""

from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

import cv2
import numpy as np
from skimage.morphology import disk

from defvos_core.config import VOID_LABEL  # the seed rule's void label: background here too
METRIC_KEYS = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def region_jaccard(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    """Jaccard index |pred ∩ gt| / |pred ∪ gt| of two (H, W) boolean masks.

    Pixels where `void` is true are left out of both counts. Returns 1 when the union is
    empty (both masks empty outside the void region).
    """
    pred, gt = _as_bool(pred, gt)
    keep = np.ones_like(gt) if void is None else ~_check_void(void, gt.shape)
    intersection = np.count_nonzero(pred & gt & keep)
    union = np.count_nonzero((pred | gt) & keep)
    if union == 0:
        return 1.0
    return intersection / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of an (H, W) boolean mask (seg2bmap of the DAVIS code).

    A pixel is on the boundary when it differs from its east, south or south-east
    neighbour; the boundary sits half a pixel towards the origin from the true contour.
    The last row compares only eastwards, the last column only southwards, and the
    bottom-right pixel is never a boundary.
    """
    mask = np.asarray(mask, dtype=bool)
    east = np.zeros_like(mask)
    south = np.zeros_like(mask)
    south_east = np.zeros_like(mask)
    east[:, :-1] = mask[:, 1:]
    south[:-1, :] = mask[1:, :]
    south_east[:-1, :-1] = mask[1:, 1:]
    boundary = (mask ^ east) | (mask ^ south) | (mask ^ south_east)
    boundary[-1, :] = mask[-1, :] ^ east[-1, :]
    boundary[:, -1] = mask[:, -1] ^ south[:, -1]
    boundary[-1, -1] = False
    return boundary


def boundary_tolerance(shape: tuple[int, int], bound_th: float = 0.008) -> int:
    """Dilation radius in pixels: ceil(bound_th * image diagonal), or bound_th itself if >= 1."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def boundary_f_measure(
    pred: np.ndarray,
    gt: np.ndarray,
    void: np.ndarray | None = None,
    bound_th: float = 0.008,
) -> float:
    """Boundary F-measure of two (H, W) boolean masks.

    Void pixels are cleared in both masks before their boundaries are taken. A boundary
    pixel of one mask matches when the other's boundary lies within a disk of radius
    `boundary_tolerance(shape, bound_th)`. Empty boundaries: both empty -> P = R = 1;
    prediction only empty -> P = 1, R = 0; ground truth only empty -> P = 0, R = 1.
    F = 2PR / (P + R), 0 when P + R = 0.
    """
    pred, gt = _as_bool(pred, gt)
    if void is not None:
        keep = ~_check_void(void, gt.shape)
        pred, gt = pred & keep, gt & keep
    pred_boundary = boundary_map(pred)
    gt_boundary = boundary_map(gt)
    n_pred = np.count_nonzero(pred_boundary)
    n_gt = np.count_nonzero(gt_boundary)
    if n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    elif n_pred == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        kernel = disk(boundary_tolerance(gt.shape, bound_th)).astype(np.uint8)
        pred_dilated = cv2.dilate(pred_boundary.astype(np.uint8), kernel).astype(bool)
        gt_dilated = cv2.dilate(gt_boundary.astype(np.uint8), kernel).astype(bool)
        precision = np.count_nonzero(pred_boundary & gt_dilated) / n_pred
        recall = np.count_nonzero(gt_boundary & pred_dilated) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def db_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """(mean, recall, decay) of one object's per-frame scores, as in the DAVIS code.

    mean = nanmean(values); recall = fraction of frames with value > 0.5 (NaN counts as
    a miss); decay = nanmean(first bin) - nanmean(last bin), with 4 overlapping bins
    bounded by round(linspace(1, N, 5)) - 1 (inclusive ends).
    """
    values = np.asarray(per_frame, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("db_statistics needs at least one per-frame value")
    # The official code stores the bin bounds as uint8, which wraps for N > 256 frames;
    # for DAVIS-sized sequences the bounds are the same as these.
    bounds = (np.round(np.linspace(1, values.size, 5) + 1e-10) - 1).astype(np.int64)
    bins = [values[bounds[i]:bounds[i + 1] + 1] for i in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(values))
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    recall = float(np.mean(values > 0.5))
    return mean, recall, decay


def evaluate_sequence(
    pred_labels: Sequence[np.ndarray],
    gt_labels: Sequence[np.ndarray],
    *,
    exclude_void: bool = False,
) -> dict[int, dict[str, np.ndarray]]:
    """Per-frame J and F of every object of one sequence (semi-supervised protocol).

    `pred_labels` and `gt_labels` are equally long lists of (H, W) integer label maps
    (0 = background, k = object k). The first and last frames are not scored. Objects are
    1..N with N the largest id of the first ground-truth frame; an object absent from a
    prediction frame is an empty mask there. Ground-truth value 255 (void) is treated as
    background, which is what the official code does in effect (it zeroes 255 before
    building its void mask, so nothing is excluded); `exclude_void=True` instead leaves
    those pixels out of J and clears them before F.

    Returns {object_id: {"J": (T-2,) array, "F": (T-2,) array}}.
    """
    if len(pred_labels) != len(gt_labels):
        raise ValueError(
            f"{len(pred_labels)} prediction frames for {len(gt_labels)} ground-truth frames"
        )
    if len(gt_labels) < 3:
        raise ValueError(
            f"a sequence needs at least 3 frames (first and last are not scored), "
            f"got {len(gt_labels)}"
        )
    first_gt = np.asarray(gt_labels[0])
    n_objects = int(np.where(first_gt == VOID_LABEL, 0, first_gt).max(initial=0))
    scored = range(1, len(gt_labels) - 1)
    j_values = np.zeros((n_objects, len(scored)))
    f_values = np.zeros((n_objects, len(scored)))
    for column, frame in enumerate(scored):
        gt = np.asarray(gt_labels[frame])
        pred = np.asarray(pred_labels[frame])
        if pred.shape != gt.shape:
            raise ValueError(
                f"frame {frame}: prediction shape {pred.shape} differs from "
                f"ground-truth shape {gt.shape}"
            )
        if pred.ndim != 2:
            raise ValueError(f"frame {frame}: expected (H, W) label maps, got {pred.shape}")
        highest = int(pred.max(initial=0))
        if highest > n_objects:
            raise ValueError(
                f"frame {frame}: prediction holds object id {highest} but the first "
                f"ground-truth frame has {n_objects} object(s)"
            )
        void_mask = gt == VOID_LABEL
        void = void_mask if exclude_void else None
        for row in range(n_objects):
            object_id = row + 1
            pred_object = pred == object_id
            gt_object = gt == object_id
            j_values[row, column] = region_jaccard(pred_object, gt_object, void)
            f_values[row, column] = boundary_f_measure(pred_object, gt_object, void)
    return {row + 1: {"J": j_values[row], "F": f_values[row]} for row in range(n_objects)}


def summarize(results: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]]) -> dict:
    """Benchmark summary of {sequence: {object_id: {"J": per-frame, "F": per-frame}}}.

    Every object of every sequence is one entry: "J-Mean", "J-Recall", "J-Decay" (and the
    F ones) are means over all objects of their `db_statistics`, and
    "J&F-Mean" = (J-Mean + F-Mean) / 2. "sequences" maps each sequence to its "J&F" (mean
    over its objects of (J-Mean + F-Mean) / 2 per object), "J-Mean", "F-Mean", and
    "objects": {object_id: {"J-Mean", "F-Mean", "J&F"}}. Values are Python floats.
    """
    per_object: dict[str, list[float]] = {key: [] for key in METRIC_KEYS}
    sequences: dict[str, dict] = {}
    for sequence, objects in results.items():
        object_rows: dict[int, dict[str, float]] = {}
        for object_id, scores in objects.items():
            j_stats = db_statistics(scores["J"])
            f_stats = db_statistics(scores["F"])
            for key, value in zip(METRIC_KEYS, j_stats + f_stats):
                per_object[key].append(value)
            object_rows[object_id] = {
                "J-Mean": j_stats[0],
                "F-Mean": f_stats[0],
                "J&F": (j_stats[0] + f_stats[0]) / 2,
            }
        if not object_rows:
            raise ValueError(f"sequence {sequence!r} has no objects to score")
        sequences[sequence] = {
            "J&F": _mean(row["J&F"] for row in object_rows.values()),
            "J-Mean": _mean(row["J-Mean"] for row in object_rows.values()),
            "F-Mean": _mean(row["F-Mean"] for row in object_rows.values()),
            "objects": object_rows,
        }
    if not sequences:
        raise ValueError("no sequences to summarize")
    summary: dict = {key: _mean(values) for key, values in per_object.items()}
    summary["J&F-Mean"] = (summary["J-Mean"] + summary["F-Mean"]) / 2
    summary["n_objects"] = len(per_object["J-Mean"])
    summary["sequences"] = sequences
    return summary


def _mean(values) -> float:
    return float(np.mean(list(values)))


def _as_bool(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred).astype(bool)
    gt = np.asarray(gt).astype(bool)
    if pred.shape != gt.shape or gt.ndim != 2:
        raise ValueError(
            f"expected two (H, W) masks of the same shape, got {pred.shape} and {gt.shape}"
        )
    return pred, gt


def _check_void(void: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    void = np.asarray(void).astype(bool)
    if void.shape != shape:
        raise ValueError(f"void mask shape {void.shape} differs from mask shape {shape}")
    return void
