"""Each object's 3D position and extent from a label map, a depth image and intrinsics.

Per object: its mask is eroded by ``erosion_px`` (mask edges straddle depth edges: their
readings often belong to the background), the interior's depth readings are back-projected
through the pinhole intrinsics (x right, y down, z forward: the camera's optical frame, in
metres), and the object gets

- ``centroid``: the per-axis median of those points (robust to stray readings);
- an axis-aligned box from the ``extent_percentile`` and ``100 - extent_percentile``
  percentiles of each axis (robust to stray readings, unlike min / max), scaled by
  1 / (1 - 2 p / 100) to the full spread of evenly spread points, and widened in x and y by
  the pixels the erosion took off plus one pixel's footprint: a flat face of W metres
  measures W, not W minus its rim and tails;
- ``valid_points``: the readings in the interior (0 and NaN are no reading, as REP 118).

The statistics use at most ``max_stat_points`` points per object (a regular grid subsample
of the interior), so the cost stays flat at any image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import cv2
import numpy as np
from scipy import ndimage

from defvos_core.errors import DepthError

OK, ABSENT, NO_DEPTH_POINTS = "ok", "absent", "no_depth_points"


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
    max_stat_points: int = 8192  # the statistics' subsample bound per object


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
    """Return pixels (u column, v row) at depths z (metres) as (N, 3) float32 points."""
    x = (u - intrinsics.cx) * z / intrinsics.fx
    y = (v - intrinsics.cy) * z / intrinsics.fy
    return np.stack([x, y, z], axis=1).astype(np.float32, copy=False)


def robust_box(points: np.ndarray, percentile: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the (low, high) per-axis percentiles of (N, 3) points, each (3,)."""
    low, high = np.percentile(points, [percentile, 100.0 - percentile], axis=0)
    return low, high


def object_positions(labels: np.ndarray, depth_m: np.ndarray, intrinsics: Intrinsics,
                     values: Iterable[int], config: Objects3DConfig = Objects3DConfig()
                     ) -> dict[int, ObjectPosition]:
    """Measure each object ``values`` of ``labels`` (H, W) in ``depth_m`` (H, W) metres."""
    if labels.shape != depth_m.shape:
        raise DepthError("depth_size", f"depth is {depth_m.shape[1]}x{depth_m.shape[0]} but "
                         f"the label map is {labels.shape[1]}x{labels.shape[0]}")
    slices = ndimage.find_objects(labels)  # index k-1: the bounding slices of value k
    return {value: _measure(labels, depth_m, intrinsics, value,
                            slices[value - 1] if 0 < value <= len(slices) else None, config)
            for value in values}


def _measure(labels: np.ndarray, depth_m: np.ndarray, intrinsics: Intrinsics, value: int,
             bounds: Optional[tuple[slice, slice]], config: Objects3DConfig) -> ObjectPosition:
    if bounds is None:
        return ObjectPosition(ABSENT)
    mask = labels[bounds] == value  # (h, w) crop around the object
    erosion = config.erosion_px
    interior = mask
    if erosion > 0:
        kernel = np.ones((2 * erosion + 1, 2 * erosion + 1), np.uint8)
        eroded = cv2.erode(mask.view(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT,
                           borderValue=0).view(bool)
        if eroded.any():
            interior = eroded
        else:
            erosion = 0  # thinner than the erosion: measure the whole mask
    depth = depth_m[bounds]
    with np.errstate(invalid="ignore"):
        valid = interior & (depth > 0) & np.isfinite(depth)
    count = int(np.count_nonzero(valid))
    if count < max(config.min_points, 1):
        return ObjectPosition(NO_DEPTH_POINTS, count)
    step = max(1, math.ceil(math.sqrt(count / config.max_stat_points)))
    rows, cols = np.nonzero(valid[::step, ::step])
    z = depth[::step, ::step][rows, cols].astype(np.float32)
    u = (cols * step + bounds[1].start).astype(np.float32)
    v = (rows * step + bounds[0].start).astype(np.float32)
    points = back_project(u, v, z, intrinsics)
    centroid = np.median(points, axis=0)
    low, high = robust_box(points, config.extent_percentile)
    spread = (high - low) / (1.0 - 2.0 * config.extent_percentile / 100.0)
    footprint = (2 * erosion + 1) * float(centroid[2])  # metres * pixels
    size = spread + np.array([footprint / intrinsics.fx, footprint / intrinsics.fy, 0.0])
    return ObjectPosition(OK, count, centroid.astype(np.float64), ((low + high) / 2),
                          size, points)
