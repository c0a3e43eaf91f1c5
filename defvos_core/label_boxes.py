"""Bounding boxes of the objects of a label map (OpenCV; no scipy on the robot)."""

from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np


def label_boxes(labels: np.ndarray, values: Iterable[int]) -> dict[int, tuple[int, int, int, int]]:
    """Return {value: (x0, y0, x1, y1)} of each of `values` found in `labels` (H, W).

    Pixel-edge boxes (x1, y1 exclusive, as `scipy.ndimage.find_objects`' slices); values
    with no pixel are left out.
    """
    boxes = {}
    for value in values:
        x, y, width, height = cv2.boundingRect((labels == value).view(np.uint8))
        if width and height:
            boxes[int(value)] = (x, y, x + width, y + height)
    return boxes
