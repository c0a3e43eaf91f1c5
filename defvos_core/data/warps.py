"""Smooth random motion of an image layer over a clip, and warping a layer into a frame.

A layer is a source image (h, w, 3) uint8 with a mask (h, w) uint8 of the pixels it covers.
Its pose in frame t is a homography H_t (source pixels -> frame pixels: rotation, scale,
aspect, shear, perspective, translation) plus a thin-plate-spline (TPS) deformation given
by the offsets of a 3x3 grid of control points, in units of the source's half-size.
`random_trajectory` walks every pose parameter with momentum (a smooth path, not jumps
between frames); `warp_layer` renders a pose with one inverse map shared by the image
(bilinear) and the mask (nearest, plus a bilinear coverage used as blending alpha).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

TPS_GRID = np.array([(x, y) for y in (-1.0, 0.0, 1.0) for x in (-1.0, 0.0, 1.0)])  # (9, 2)
TPS_STRIDE = 8  # the deformation field is evaluated every 8 frame pixels and upsampled


@dataclass
class MotionConfig:
    """Per-step random changes (with momentum) of a layer's pose, and their bounds."""

    rotation: float = 3.0  # degrees per step
    scale: float = 0.05  # log-scale per step
    translation: float = 0.04  # fraction of the frame's longer side per step
    shear: float = 0.02  # per step
    perspective: float = 0.02  # per step, in units of the source half-size
    deformation: float = 0.02  # TPS control-point offset per step (source half-sizes)
    momentum: float = 0.7  # fraction of the previous step's velocity kept
    max_rotation: float = 30.0  # degrees from frame 0 (and the largest start angle / 3)
    max_scale: float = 1.4  # scale within x1/max_scale .. x max_scale of frame 0
    max_shear: float = 0.15
    max_perspective: float = 0.12
    max_deformation: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.max_scale < 1.0:
            raise ValueError(f"max_scale must be >= 1, got {self.max_scale}")


class Pose(NamedTuple):
    """Where a layer is in one frame."""

    homography: np.ndarray  # (3, 3) float64, source pixels -> frame pixels
    deformation: np.ndarray  # (9, 2) TPS control-point offsets, in source half-sizes


class WarpedLayer(NamedTuple):
    """A layer rendered into the frame window `box` = (top, left, bottom, right)."""

    box: tuple[int, int, int, int]
    image: np.ndarray  # (h, w, 3) float32 in 0..255
    alpha: np.ndarray  # (h, w, 1) float32 in [0, 1], bilinear coverage
    mask: np.ndarray  # (h, w) bool, nearest-neighbour coverage


def _tps_kernel(distances_sq: np.ndarray) -> np.ndarray:
    """U(r) = r^2 log r^2 of squared distances (0 at r = 0)."""
    safe = np.where(distances_sq > 0, distances_sq, 1.0)
    return np.where(distances_sq > 0, distances_sq * np.log(safe), 0.0)


def _tps_system_inverse() -> np.ndarray:
    count = len(TPS_GRID)
    affine = np.hstack([np.ones((count, 1)), TPS_GRID])  # (9, 3)
    system = np.zeros((count + 3, count + 3))
    system[:count, :count] = _tps_kernel(((TPS_GRID[:, None] - TPS_GRID[None]) ** 2).sum(-1))
    system[:count, count:] = affine
    system[count:, :count] = affine.T
    return np.linalg.inv(system)


_TPS_INVERSE = _tps_system_inverse()  # (12, 12), the grid is fixed


def tps_offsets(points: np.ndarray, deformation: np.ndarray) -> np.ndarray:
    """Interpolate control-point offsets (9, 2) at points (N, 2) -> (N, 2) (same units)."""
    coefficients = _TPS_INVERSE[:, :len(TPS_GRID)] @ deformation  # (12, 2)
    kernel = _tps_kernel(((points[:, None] - TPS_GRID[None]) ** 2).sum(-1))  # (N, 9)
    affine = np.hstack([np.ones((len(points), 1)), points])  # (N, 3)
    return kernel @ coefficients[:len(TPS_GRID)] + affine @ coefficients[len(TPS_GRID):]


def _homography(source_hw: tuple[int, int], centre: np.ndarray, radius: float,
                angle: float, log_scale: float, aspect: float, shear: float,
                perspective: np.ndarray) -> np.ndarray:
    """Source pixels -> frame pixels: normalise the source, distort, scale, move."""
    height, width = source_hw
    half = max(height, width) / 2.0
    to_unit = np.array([[1 / half, 0, -width / 2 / half],
                        [0, 1 / half, -height / 2 / half], [0, 0, 1.0]])
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    stretch = math.exp(aspect / 2)
    linear = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1, shear], [0, 1]]) \
        @ np.diag([stretch, 1 / stretch])
    distort = np.eye(3)
    distort[:2, :2] = linear
    distort[2, :2] = perspective
    size = radius * math.exp(log_scale)
    to_frame = np.array([[size, 0, centre[0]], [0, size, centre[1]], [0, 0, 1.0]])
    return to_frame @ distort @ to_unit


def random_trajectory(num_frames: int, rng: np.random.Generator, motion: MotionConfig,
                      source_hw: tuple[int, int], centre: tuple[float, float], radius: float,
                      frame_hw: tuple[int, int], centre_bounds: tuple[float, float, float, float],
                      velocity: tuple[float, float] = (0.0, 0.0)) -> list[Pose]:
    """Poses of a layer over `num_frames`, each parameter a bounded random walk with momentum.

    Frame 0 puts the source centre at `centre` (x, y) with half-size `radius` (frame pixels),
    a random start angle within +-max_rotation/3 and a slight random deformation. The centre
    starts moving at `velocity` (px per frame) and stays within `centre_bounds`
    (x0, y0, x1, y1); the other parameters stay within the motion's bounds.
    """
    frame_size = max(frame_hw)
    steps = np.array([motion.rotation, motion.scale, motion.scale / 2, motion.shear,
                      motion.perspective, motion.perspective,
                      motion.translation * frame_size, motion.translation * frame_size])
    limits = np.array([motion.max_rotation, math.log(motion.max_scale),
                       math.log(motion.max_scale) / 2, motion.max_shear,
                       motion.max_perspective, motion.max_perspective])
    # (angle, log scale, log aspect, shear, perspective x, perspective y, centre x, centre y)
    params = np.zeros(8)
    params[0] = rng.uniform(-1, 1) * motion.max_rotation / 3
    params[6:] = centre
    velocities = np.zeros(8)
    velocities[6:] = velocity
    deformation = rng.uniform(-1, 1, (9, 2)) * motion.deformation
    deformation_velocity = np.zeros((9, 2))
    low, high = np.array(centre_bounds[:2]), np.array(centre_bounds[2:])
    start_angle = params[0]
    lower = np.r_[start_angle - limits[0], -limits[1:]]
    upper = np.r_[start_angle + limits[0], limits[1:]]
    poses = []
    for t in range(num_frames):
        if t:
            velocities = motion.momentum * velocities + rng.uniform(-1, 1, 8) * steps
            params = params + velocities
            params[:6] = np.clip(params[:6], lower, upper)
            params[6:] = np.clip(params[6:], low, high)
            deformation_velocity = motion.momentum * deformation_velocity \
                + rng.uniform(-1, 1, (9, 2)) * motion.deformation
            deformation = np.clip(deformation + deformation_velocity,
                                  -motion.max_deformation, motion.max_deformation)
        homography = _homography(source_hw, params[6:], radius, params[0], params[1],
                                 params[2], params[3], params[4:6])
        poses.append(Pose(homography, deformation.copy()))
    return poses


def _frame_box(pose: Pose, source_hw: tuple[int, int], frame_hw: tuple[int, int]
               ) -> tuple[int, int, int, int] | None:
    """Frame window (top, left, bottom, right) the warped source can cover; None if none."""
    height, width = source_hw
    half = max(height, width) / 2.0
    margin = float(np.abs(pose.deformation).max()) * 1.5 * half  # TPS overshoot allowance
    xs = np.array([-margin, width + margin])
    ys = np.array([-margin, height + margin])
    corners = np.array([(x, y, 1.0) for x in xs for y in ys]).T  # (3, 4)
    mapped = pose.homography @ corners
    if (mapped[2] <= 1e-6).any():  # a corner beyond the horizon: use the whole frame
        return 0, 0, frame_hw[0], frame_hw[1]
    mapped = mapped[:2] / mapped[2]
    left, top = np.floor(mapped.min(axis=1)).astype(int)
    right, bottom = np.ceil(mapped.max(axis=1)).astype(int) + 1
    top, left = max(top, 0), max(left, 0)
    bottom, right = min(bottom, frame_hw[0]), min(right, frame_hw[1])
    return (top, left, bottom, right) if bottom > top and right > left else None


def source_maps(pose: Pose, source_hw: tuple[int, int], box: tuple[int, int, int, int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinates (map_x, map_y), each (h, w) float32, of the frame pixels in `box`."""
    top, left, bottom, right = box
    height, width = source_hw
    half = max(height, width) / 2.0
    inverse = np.linalg.inv(pose.homography).astype(np.float32)

    def project(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # xs (1, w) and ys (h, 1) frame pixels -> source pixels, each (h, w)
        w = inverse[2, 0] * xs + inverse[2, 1] * ys + inverse[2, 2]
        w = np.where(np.abs(w) > 1e-6, w, np.float32(1e-6))
        return ((inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]) / w,
                (inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]) / w)

    map_x, map_y = project(np.arange(left, right, dtype=np.float32)[None],
                           np.arange(top, bottom, dtype=np.float32)[:, None])
    if np.abs(pose.deformation).max() > 0:
        coarse_x, coarse_y = project(
            np.arange(left, right + TPS_STRIDE, TPS_STRIDE, dtype=np.float32)[None],
            np.arange(top, bottom + TPS_STRIDE, TPS_STRIDE, dtype=np.float32)[:, None])
        points = np.stack([(coarse_x - width / 2) / half, (coarse_y - height / 2) / half], -1)
        offsets = tps_offsets(points.reshape(-1, 2).astype(np.float64), pose.deformation)
        offsets = (offsets * half).astype(np.float32).reshape(points.shape)  # (h', w', 2)
        # the coarse grid spans the box plus one stride: upsample to that span, then crop
        span = (offsets.shape[1] - 1) * TPS_STRIDE + 1, (offsets.shape[0] - 1) * TPS_STRIDE + 1
        dense = cv2.resize(offsets, span, interpolation=cv2.INTER_LINEAR)
        map_x = map_x + dense[:bottom - top, :right - left, 0]
        map_y = map_y + dense[:bottom - top, :right - left, 1]
    limit = np.float32(1e5)  # near-horizon points: far outside the source, still finite
    return (np.clip(map_x, -limit, limit, out=map_x), np.clip(map_y, -limit, limit, out=map_y))


def warp_layer(image: np.ndarray, mask: np.ndarray, pose: Pose, frame_hw: tuple[int, int]
               ) -> WarpedLayer | None:
    """Render a layer (outside the source: uncovered) into a frame; None if it misses it."""
    box = _frame_box(pose, image.shape[:2], frame_hw)
    if box is None:
        return None
    map_x, map_y = source_maps(pose, image.shape[:2], box)
    rgba = np.dstack([image, mask.astype(np.uint8) * 255])  # (h, w, 4): one bilinear pass
    warped = cv2.remap(rgba, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=0).astype(np.float32)
    hard = cv2.remap(mask.astype(np.uint8), map_x, map_y, cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
    return WarpedLayer(box, warped[..., :3], warped[..., 3:] / 255.0, hard)


def warp_scene(image: np.ndarray, labels: np.ndarray, pose: Pose, frame_hw: tuple[int, int]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Render a scene over the whole frame: (H, W, 3) uint8 and labels (H, W); borders reflected."""
    map_x, map_y = source_maps(pose, image.shape[:2], (0, 0, frame_hw[0], frame_hw[1]))
    frame = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    warped_labels = cv2.remap(labels, map_x, map_y, cv2.INTER_NEAREST,
                              borderMode=cv2.BORDER_REFLECT_101)
    return frame, warped_labels
