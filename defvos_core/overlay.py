"""What a person looks at: label maps drawn over their frames (the node's ~/overlay, segment).

Each object is tinted with its DAVIS palette colour (alpha-blended, so the image under the
mask stays visible), outlined in that colour so one can see whether the mask fits, and
labelled with its id at the top-left of its box. The outline is a lighter shade of the
fill, so that it shows on the tint too.
"""

from __future__ import annotations

from typing import Mapping

import cv2
import numpy as np

from defvos_core.data.masks import davis_palette
from defvos_core.label_boxes import label_boxes

PALETTE = davis_palette()
OUTLINE = np.minimum(PALETTE.astype(np.int64) + 96, 255).astype(np.uint8)


def overlay(frame_rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.35,
            names: Mapping[int, str] | None = None) -> np.ndarray:
    """Return `frame_rgb` (H, W, 3 uint8) with the objects of `labels` (H, W) drawn over it.

    alpha: opacity of the fill; names: text per label value (default: the value itself).
    Outline and text grow with the frame (1 px and a 0.4 font up to 240 rows, 2 px and 0.6 at
    480).
    """
    labels = np.asarray(labels, dtype=np.uint8)
    values = [int(v) for v in np.unique(labels) if v != 0]
    drawn = frame_rgb.astype(np.float32)
    foreground = labels > 0
    drawn[foreground] = (1 - alpha) * drawn[foreground] + alpha * PALETTE[labels[foreground]]
    drawn = drawn.clip(0, 255).astype(np.uint8)
    scale = max(frame_rgb.shape[0], 240) / 480
    thickness = max(1, round(2 * scale))
    for value in values:
        contours, _ = cv2.findContours((labels == value).view(np.uint8), cv2.RETR_LIST,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(drawn, contours, -1, OUTLINE[value].tolist(), thickness)
    for value, (x0, y0, _, _) in label_boxes(labels, values).items():
        _text(drawn, names.get(value, str(value)) if names else str(value), x0, y0,
              PALETTE[value], scale)
    return drawn


def _text(image: np.ndarray, text: str, x: int, y: int, colour: np.ndarray,
          scale: float) -> None:
    """Write `text` on a box of `colour` whose top-left is (x, y), kept inside the image."""
    font, size = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, 0.6 * scale)
    weight = max(1, round(1.5 * scale))
    (width, height), baseline = cv2.getTextSize(text, font, size, weight)
    x = min(max(0, x), max(0, image.shape[1] - width - 2))
    y = min(max(0, y), max(0, image.shape[0] - height - baseline - 2))
    cv2.rectangle(image, (x, y), (x + width + 2, y + height + baseline + 2), colour.tolist(), -1)
    ink = (0, 0, 0) if int(colour.astype(int).sum()) > 380 else (255, 255, 255)
    cv2.putText(image, text, (x + 1, y + height + 1), font, size, ink, weight, cv2.LINE_AA)
