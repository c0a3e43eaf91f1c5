"""Seed label maps: the one place that applies the void rule and checks object ids.

Rule (everywhere: tracker, CLI, node, evaluation): 0 is background, 1..MAX_OBJECT_ID are
objects, and VOID_LABEL (255, DAVIS's "void") counts as background in a seed.
"""

from __future__ import annotations

import numpy as np

from defvos_core.config import MAX_OBJECT_ID, VOID_LABEL
from defvos_core.errors import SeedError


def clean_seed(label_map: np.ndarray) -> np.ndarray:
    """Return the (H, W) seed as int64 with void pixels set to background."""
    seed = np.asarray(label_map)
    if seed.ndim != 2:
        raise SeedError("seed_size", f"a seed must be an (H, W) label map, got shape "
                        f"{seed.shape}")
    seed = seed.astype(np.int64, copy=True)
    seed[seed == VOID_LABEL] = 0
    return seed


def seed_object_ids(seed: np.ndarray) -> list[int]:
    """Return the object ids of a cleaned seed, ascending; SeedError when none or invalid."""
    ids = [int(i) for i in np.unique(seed) if i != 0]
    if not ids:
        raise SeedError("seed_empty", "seed mask has no object (every pixel is 0); 255 is void")
    if ids[0] < 0 or ids[-1] > MAX_OBJECT_ID:
        raise SeedError("seed_ids", f"object ids must be in 1..{MAX_OBJECT_ID} (255 is void), "
                        f"got {ids}")
    return ids


def check_seed(label_map: np.ndarray,
               frame_shape: tuple[int, ...]) -> tuple[np.ndarray, list[int]]:
    """Return (cleaned seed, its object ids) for a frame of `frame_shape` (H, W[, 3])."""
    seed = clean_seed(label_map)
    if seed.shape != tuple(frame_shape[:2]):
        raise SeedError("seed_size", f"seed mask is {seed.shape[1]}x{seed.shape[0]} but its "
                        f"frame is {frame_shape[1]}x{frame_shape[0]} (a seed must have its "
                        "frame's size)")
    return seed, seed_object_ids(seed)
