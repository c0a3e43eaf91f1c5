"""OpenCV GrabCut from a box or clicks: the classical prompt -> mask baseline (no learned model).

- box: `cv2.GC_INIT_WITH_RECT` (outside the box is background);
- clicks: a mask init where each positive click is a definite-foreground disk inside a
  probable-foreground disk, each negative click a definite-background disk, the rest probable
  background (`cv2.GC_INIT_WITH_MASK`).
"""

from __future__ import annotations

import cv2
import numpy as np

CLICK_RADIUS = 0.02  # definite fg/bg disk around a click, fraction of the short side
REACH = 0.25  # probable-foreground disk around a positive click, fraction of the short side


def _run(image_rgb: np.ndarray, mask: np.ndarray, rect: tuple[int, int, int, int] | None,
         iterations: int) -> np.ndarray | None:
    """Run GrabCut in place on `mask`; the foreground, or None when GrabCut cannot start."""
    background = np.zeros((1, 65), np.float64)
    foreground = np.zeros((1, 65), np.float64)
    mode = cv2.GC_INIT_WITH_RECT if rect is not None else cv2.GC_INIT_WITH_MASK
    try:
        cv2.grabCut(np.ascontiguousarray(image_rgb[..., ::-1]), mask, rect or (0, 0, 0, 0),
                    background, foreground, iterations, mode)
    except cv2.error:  # no background (or foreground) sample to fit a colour model to
        return None
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def grabcut_box(image_rgb: np.ndarray, box: tuple[float, float, float, float],
                iterations: int = 5) -> np.ndarray:
    """(H, W, 3) uint8 RGB + an in-frame box (x0, y0, x1, y1) -> (H, W) bool mask."""
    height, width = image_rgb.shape[:2]
    x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
    x1, y1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
    box_mask = np.zeros((height, width), bool)
    box_mask[y0:y1, x0:x1] = True
    mask = np.zeros((height, width), np.uint8)
    found = _run(image_rgb, mask, (x0, y0, max(1, x1 - x0), max(1, y1 - y0)), iterations)
    if found is None or not found.any():
        return box_mask  # a box covering the frame leaves no background to learn
    return found


def grabcut_clicks(image_rgb: np.ndarray, clicks: list[tuple[float, float, int]],
                   iterations: int = 5) -> np.ndarray:
    """(H, W, 3) uint8 RGB + clicks (x, y, 1 positive / 0 negative) -> (H, W) bool mask."""
    height, width = image_rgb.shape[:2]
    short = min(height, width)
    mask = np.full((height, width), cv2.GC_PR_BGD, np.uint8)
    radius = max(2, round(CLICK_RADIUS * short))
    positives = [(round(x), round(y)) for x, y, label in clicks if label]
    negatives = [(round(x), round(y)) for x, y, label in clicks if not label]
    for center in positives:
        cv2.circle(mask, center, round(REACH * short), cv2.GC_PR_FGD, -1)
    for center in positives:
        cv2.circle(mask, center, radius, cv2.GC_FGD, -1)
    for center in negatives:
        cv2.circle(mask, center, radius, cv2.GC_BGD, -1)
    clicked = mask == cv2.GC_FGD
    found = _run(image_rgb, mask, None, iterations)
    if found is None or not found.any():
        return clicked
    return found
