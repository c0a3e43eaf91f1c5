"""Indexed (palette) PNG label maps: read, write, and the DAVIS palette."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def davis_palette() -> np.ndarray:
    """Return the DAVIS palette as a (256, 3) uint8 array (0 black, 1 red, 2 green, ...)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        value, red, green, blue = index, 0, 0, 0
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (red, green, blue)
    return palette


def read_label_map(path: str | Path) -> np.ndarray:
    """Read an indexed PNG as an (H, W) uint8 label map (0 = background, k = object k).

    Palette PNGs give their indices; greyscale PNGs their values. RGB PNGs are rejected:
    their colours are not labels.
    """
    path = Path(path)
    try:
        image = Image.open(path)
        image.load()
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read label map ({error})") from error
    if image.mode in ("P", "L"):
        return np.array(image, dtype=np.uint8)
    if image.mode in ("I", "I;16"):
        labels = np.array(image)
        if labels.max(initial=0) > 255:
            raise ValueError(f"{path}: label values above 255 are not supported")
        return labels.astype(np.uint8)
    raise ValueError(f"{path}: expected an indexed (palette) or greyscale PNG, "
                     f"got mode {image.mode}")


def write_label_map(path: str | Path, labels: np.ndarray) -> None:
    """Write an (H, W) integer label map as a palette PNG with the DAVIS palette."""
    if labels.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {labels.shape}")
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(davis_palette().reshape(-1).tolist())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
