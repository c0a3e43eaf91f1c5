"""ECSSD-style static images: `images/<stem>.jpg` with binary masks `masks/<stem>.png`.

Each image holds one foreground region (mask values {0, 255}), read as a label map with
object id 1 for static-image pretraining (`defvos_core.data.static_clips`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from defvos_core.data.video_io import list_frame_files, read_rgb


@dataclass(frozen=True)
class StaticImage:
    """One photograph and its foreground mask on disk."""

    name: str  # "<folder>/<stem>", e.g. "ecssd/0001"
    image_path: Path
    mask_path: Path


def read_static_images(root: str | Path) -> list[StaticImage]:
    """Return the image/mask pairs of `root` in name order; every image needs its mask."""
    root = Path(root)
    images = list_frame_files(root / "images")  # FileNotFoundError names the folder
    pairs = []
    for image_path in images:
        mask_path = root / "masks" / f"{image_path.stem}.png"
        if not mask_path.is_file():
            raise FileNotFoundError(f"{mask_path}: mask of {image_path} is missing")
        pairs.append(StaticImage(f"{root.name}/{image_path.stem}", image_path, mask_path))
    if not pairs:
        raise ValueError(f"{root / 'images'}: no images")
    return pairs


def read_binary_mask(path: str | Path) -> np.ndarray:
    """Read a {0, 255} mask (any 8-bit grayscale) as (H, W) uint8 labels: 1 where >= 128."""
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise ValueError(f"{path}: cannot read mask")
    return (grey >= 128).astype(np.uint8)


def load_static_image(item: StaticImage) -> tuple[np.ndarray, np.ndarray]:
    """Return the image (H, W, 3) uint8 RGB and its labels (H, W) uint8 (0 bg, 1 object)."""
    image = read_rgb(item.image_path)
    labels = read_binary_mask(item.mask_path)
    if labels.shape != image.shape[:2]:
        raise ValueError(f"{item.mask_path}: mask is {labels.shape}, image {item.image_path} "
                         f"is {image.shape[:2]}")
    return image, labels
