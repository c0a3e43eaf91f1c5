"""Boxes and clicks drawn from ground-truth masks: the prompts a detector or an operator gives.

Used to train the prompt head (random, jittered) and to evaluate it (fixed seeds).
Boxes are (x0, y0, x1, y1) in pixels, x1 / y1 exclusive (a one-pixel object at column c has
x0 = c, x1 = c + 1); clicks are (x, y, label) at pixel centres, label 1 on the object, 0 off.
"""

from __future__ import annotations

import cv2
import numpy as np

BOX_JITTER = 0.10  # each box edge moves by up to this fraction of the box's side
POSITIVE_CLICKS = (1, 3)  # inclusive range of clicks on the object
NEGATIVE_CLICKS = (0, 2)  # inclusive range of clicks off it
INTERIOR = 0.3  # positive clicks: at least this fraction of the deepest interior distance
NEGATIVE_MARGIN = 5  # negative clicks: at least this many pixels from the object

Box = tuple[float, float, float, float]
Click = tuple[float, float, int]


def mask_box(mask: np.ndarray) -> Box:
    """Tight box of a non-empty (H, W) boolean mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        raise ValueError("empty mask has no box")
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def jitter_box(box: Box, size: tuple[int, int], rng: np.random.Generator,
               fraction: float = BOX_JITTER) -> Box:
    """Move each edge by U(-fraction, fraction) x the box's side, kept in the (H, W) frame."""
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    dx0, dx1 = rng.uniform(-fraction, fraction, 2) * width
    dy0, dy1 = rng.uniform(-fraction, fraction, 2) * height
    x0, x1 = np.clip([x0 + dx0, x1 + dx1], 0, size[1])
    y0, y1 = np.clip([y0 + dy0, y1 + dy1], 0, size[0])
    if x1 - x0 < 1 or y1 - y0 < 1:
        return box
    return float(x0), float(y0), float(x1), float(y1)


def _interior_distance(mask: np.ndarray) -> np.ndarray:
    """Distance of each object pixel to the nearest non-object pixel (frame edge excluded)."""
    padded = np.pad(mask.astype(np.uint8), 1, constant_values=0)
    return cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]


def center_click(mask: np.ndarray) -> Click:
    """Return the click deepest inside the object (an operator's usual first click)."""
    distance = _interior_distance(mask)
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return float(x), float(y), 1


def sample_clicks(mask: np.ndarray, rng: np.random.Generator,
                  positives: tuple[int, int] = POSITIVE_CLICKS,
                  negatives: tuple[int, int] = NEGATIVE_CLICKS) -> list[Click]:
    """1-3 clicks inside the object away from its boundary, then 0-2 outside near it."""
    distance = _interior_distance(mask)
    ys, xs = np.nonzero(distance >= INTERIOR * distance.max())
    count = int(rng.integers(positives[0], positives[1] + 1))
    picks = rng.choice(len(ys), size=min(count, len(ys)), replace=False)
    clicks: list[Click] = [(float(xs[i]), float(ys[i]), 1) for i in picks]
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    far = outside >= NEGATIVE_MARGIN
    x0, y0, x1, y1 = mask_box(mask)
    near = np.zeros_like(far)  # within the box grown by half its size on each side
    grow_x, grow_y = (x1 - x0) / 2, (y1 - y0) / 2
    near[max(0, int(y0 - grow_y)):int(y1 + grow_y), max(0, int(x0 - grow_x)):int(x1 + grow_x)] = 1
    ys, xs = np.nonzero(far & near)
    if not len(ys):
        ys, xs = np.nonzero(far)
    count = int(rng.integers(negatives[0], negatives[1] + 1)) if len(ys) else 0
    picks = rng.choice(len(ys), size=min(count, len(ys)), replace=False) if count else []
    clicks += [(float(xs[i]), float(ys[i]), 0) for i in picks]
    return clicks
