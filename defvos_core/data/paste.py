"""Cut an object out of a photo and paste it over a frame (a second object, an occluder)."""

from __future__ import annotations

import cv2
import numpy as np

from defvos_core.data.prompt_sampling import mask_box


def cut_out(image: np.ndarray, mask: np.ndarray, box_area: float,
            frame_size: tuple[int, int], max_fraction: tuple[float, float] = (0.8, 0.6)
            ) -> tuple[np.ndarray, np.ndarray]:
    """Crop the object of (image, bool mask) to its box and scale it to ~`box_area` pixels.

    The scaled box is at most `max_fraction` (of height, of width) of an (H, W) `frame_size`
    and at least 4 pixels a side. Returns (RGB crop, bool mask crop).
    """
    x0, y0, x1, y1 = (int(v) for v in mask_box(mask))
    rgb, mask = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    scale = np.sqrt(box_area / (rgb.shape[0] * rgb.shape[1]))
    scale = min(scale, max_fraction[0] * frame_size[0] / rgb.shape[0],
                max_fraction[1] * frame_size[1] / rgb.shape[1])
    size = (max(4, round(rgb.shape[1] * scale)), max(4, round(rgb.shape[0] * scale)))
    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    return rgb, mask


def paste(frame: np.ndarray, labels: np.ndarray, rgb: np.ndarray, mask: np.ndarray,
          top: int, left: int, object_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Return copies of (frame, labels) with the object pasted at (top, left) as `object_id`.

    The crop must fit in the frame; pasted pixels hide what was there (labels too).
    """
    frame, labels = frame.copy(), labels.copy()
    window = (slice(top, top + mask.shape[0]), slice(left, left + mask.shape[1]))
    frame[window][mask] = rgb[mask]
    labels[window][mask] = object_id
    return frame, labels
