"""Each object's 3D position and extent from a label map, a depth image and intrinsics.

Per object: its mask is eroded by ``erosion_px`` (mask edges straddle depth edges: their
readings often belong to the background), the interior's depth readings are back-projected
through the pinhole intrinsics (x right, y down, z forward: the camera's optical frame, in
metres), and the object gets

- ``centroid``: the per-axis median of those points (robust to stray readings);
- an axis-aligned box from the ``extent_percentile`` and ``100 - extent_percentile``
  percentiles of each axis (robust to stray readings, unlike min / max), scaled by
  1 / (1 - 2 p / 100) to the full spread of evenly spread points, and widened in x and y by
  the pixels the erosion took off: a flat face of W metres measures W, not W minus its rim
  and tails. Each point stands for its pixel's footprint: it is placed at a fixed,
  evenly spread offset within the pixel (a low-discrepancy sequence, no randomness), so
  that the percentiles see a continuous surface, not a few columns of pixel centres;
- ``valid_points``: the readings in the interior (0 and NaN are no reading, as REP 118).

The statistics use at most about ``max_stat_points`` points per object: a larger interior is
read on a grid of every k-th row and column (deterministic, so a still object gives the
same figures frame after frame; each point then stands for k x k pixels), so the cost
stays flat at any object and image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import cv2
import numpy as np

from defvos_core.errors import DepthError

OK, ABSENT, NO_DEPTH_POINTS = "ok", "absent", "no_depth_points"
_R2 = (0.7548776662466927, 0.5698402909980532)  # the plastic-number sequence's steps
_OFFSETS: tuple[np.ndarray, ...] = (np.zeros(0, np.float32), np.zeros(0, np.float32))


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (the K of a sensor_msgs/CameraInfo)."""

    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_k(cls, k: Sequence[float]) -> "Intrinsics":
        """Return the intrinsics of a row-major 3x3 K; DepthError when it is not usable."""
        values = [float(v) for v in k]
        if len(values) != 9:
            raise DepthError("camera_info_invalid", f"K has {len(values)} values; expected 9 "
                             "(row-major 3x3)")
        fx, fy, cx, cy = values[0], values[4], values[2], values[5]
        if not all(math.isfinite(v) for v in (fx, fy, cx, cy)) or fx <= 0 or fy <= 0:
            raise DepthError("camera_info_invalid", f"K has fx={fx}, fy={fy}, cx={cx}, "
                             f"cy={cy}; expected finite values with fx, fy > 0 (an "
                             "uncalibrated camera publishes K = 0)")
        return cls(fx, fy, cx, cy)


@dataclass(frozen=True)
class Objects3DConfig:
    """How objects are measured (the node's ``depth_*`` parameters take these defaults)."""

    erosion_px: int = 2  # pixels taken off the mask's rim before measuring
    extent_percentile: float = 2.0  # the box spans the p..100-p percentiles of each axis
    min_points: int = 20  # fewer readings in the interior: no position
    max_stat_points: int = 2048  # the statistics' subsample bound per object


@dataclass(frozen=True)
class ObjectPosition:
    """One object's measurement; the arrays are None unless ``status`` is OK."""

    status: str  # OK, ABSENT or NO_DEPTH_POINTS
    valid_points: int = 0
    centroid: Optional[np.ndarray] = None  # (3,) metres: median x, y, z
    box_centre: Optional[np.ndarray] = None  # (3,) metres
    box_size: Optional[np.ndarray] = None  # (3,) metres
    points: Optional[np.ndarray] = None  # (N, 3) float32: the points the statistics used

    @property
    def ok(self) -> bool:
        """Whether the position and box are valid."""
        return self.status == OK


def back_project(u: np.ndarray, v: np.ndarray, z: np.ndarray,
                 intrinsics: Intrinsics) -> np.ndarray:
    """Return pixels (u column, v row) at depths z (metres), (N,) each, as (3, N) float32.

    Rows x, y, z (``.T`` gives (N, 3) points).
    """
    axes = np.empty((3, len(z)), np.float32)
    axes[2] = z
    for row, pixels, centre, focal in ((0, u, intrinsics.cx, intrinsics.fx),
                                       (1, v, intrinsics.cy, intrinsics.fy)):
        np.subtract(pixels, centre, out=axes[row], casting='unsafe')
        axes[row] *= axes[2]
        axes[row] /= focal
    return axes


def axis_percentiles(axes: np.ndarray, percentiles: Sequence[float]) -> np.ndarray:
    """Return the percentiles (linear interpolation, as numpy's default) of each axis.

    ``axes`` (3, N), e.g. ``points.T`` -> (len(percentiles), 3); one partial sort per axis.
    """
    count = axes.shape[1]
    ranks = [q * (count - 1) / 100.0 for q in percentiles]
    below = [math.floor(rank) for rank in ranks]
    above = [min(index + 1, count - 1) for index in below]
    ordered = np.partition(axes, sorted(set(below + above)), axis=1)
    weight = np.array([rank - index for rank, index in zip(ranks, below)])[:, None]  # (P, 1)
    return ordered[:, below].T * (1.0 - weight) + ordered[:, above].T * weight


def _footprint_offsets(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (du, dv) (count,) float32 in (-1/2, 1/2): the R2 low-discrepancy sequence."""
    global _OFFSETS
    if len(_OFFSETS[0]) < count:
        index = np.arange(max(count, 2 * len(_OFFSETS[0])), dtype=np.float64)
        _OFFSETS = tuple((np.modf(0.5 + index * step)[0] - 0.5).astype(np.float32)
                         for step in _R2)
    return _OFFSETS[0][:count], _OFFSETS[1][:count]


def has_reading(depth: np.ndarray) -> np.ndarray:
    """Return where a depth image (H, W) holds a reading: not 0, NaN or infinite (REP 118)."""
    if depth.dtype.kind in "ui":
        return depth > 0
    with np.errstate(invalid="ignore"):
        return (depth > 0) & (depth < np.inf)


def object_interiors(labels: np.ndarray, erosion_px: int) -> np.ndarray:
    """Return (H, W) uint8: each pixel's label where its whole (2e+1)^2 window has that label.

    That is every object's mask eroded by ``erosion_px`` at once (the image border counts as
    background); 0 elsewhere.
    """
    if erosion_px <= 0:
        return labels
    kernel = np.ones((2 * erosion_px + 1, 2 * erosion_px + 1), np.uint8)
    lowest = cv2.erode(labels, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    same = cv2.compare(lowest, cv2.dilate(labels, kernel), cv2.CMP_EQ)  # 255 where equal
    return cv2.bitwise_and(lowest, same)


def object_positions(labels: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics,
                     values: Iterable[int], config: Objects3DConfig = Objects3DConfig(),
                     depth_scale: float = 1.0) -> dict[int, ObjectPosition]:
    """Measure each object ``values`` of ``labels`` (H, W) in ``depth`` (H, W).

    ``depth`` holds metres / ``depth_scale`` (uint16 millimetres with 0.001, float32 metres
    with 1.0); it is read only under the objects, never converted as a whole.
    """
    if labels.shape != depth.shape:
        raise DepthError("depth_size", f"depth is {depth.shape[1]}x{depth.shape[0]} but "
                         f"the label map is {labels.shape[1]}x{labels.shape[0]}")
    labels = np.asarray(labels, dtype=np.uint8)
    readings = has_reading(depth)
    interiors = object_interiors(labels, config.erosion_px)
    flat = np.flatnonzero((interiors > 0) & readings)  # (N,): flat indices, row-major
    found = interiors.ravel()[flat]
    order = np.argsort(found, kind="stable")  # a counting sort: each object's pixels in a run
    rows, cols = np.divmod(flat[order].astype(np.int32), np.int32(labels.shape[1]))
    counts = np.bincount(found, minlength=256)
    ends = np.cumsum(counts)
    positions = {}
    for value in values:
        erosion = config.erosion_px
        if counts[value]:
            run = slice(int(ends[value] - counts[value]), int(ends[value]))
            object_rows, object_cols = rows[run], cols[run]
        elif not (labels == value).any():
            positions[value] = ObjectPosition(ABSENT)
            continue
        elif (interiors == value).any():  # an interior without a single reading
            positions[value] = ObjectPosition(NO_DEPTH_POINTS, 0)
            continue
        else:  # thinner than the erosion: the whole mask
            erosion = 0
            object_rows, object_cols = np.nonzero((labels == value) & readings)
        positions[value] = _measure(object_rows, object_cols, depth, depth_scale, intrinsics,
                                    erosion, config)
    return positions


def _measure(rows: np.ndarray, cols: np.ndarray, depth: np.ndarray, depth_scale: float,
             intrinsics: Intrinsics, erosion: int, config: Objects3DConfig) -> ObjectPosition:
    """Measure one object from its pixels with a reading (rows, cols: (N,) each)."""
    count = len(rows)
    if count < max(config.min_points, 1):
        return ObjectPosition(NO_DEPTH_POINTS, count)
    step = math.ceil(math.sqrt(count / config.max_stat_points))
    if step > 1:  # every step-th row and column: no aliasing with the rows' lengths
        keep = (rows % step == 0) & (cols % step == 0)
        rows, cols = rows[keep], cols[keep]
    z = depth[rows, cols] * np.float32(depth_scale)
    # each point anywhere in its step x step footprint: R2 sequence offsets in (-1/2, 1/2)
    du, dv = _footprint_offsets(len(rows))
    if step > 1:
        du, dv = du * np.float32(step), dv * np.float32(step)
    axes = back_project(cols + du, rows + dv, z, intrinsics)  # (3, N)
    p = config.extent_percentile
    low, centroid, high = axis_percentiles(axes, [p, 50.0, 100.0 - p])  # (3,) each
    spread = (high - low) / (1.0 - 2.0 * p / 100.0)
    footprint = 2 * erosion * float(centroid[2])  # metres * pixels
    size = spread + np.array([footprint / intrinsics.fx, footprint / intrinsics.fy, 0.0])
    return ObjectPosition(OK, count, centroid, (low + high) / 2, size, axes.T)
