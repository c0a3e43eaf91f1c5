"""Typed errors for bad input: each carries a `kind` that callers map to their own reporting.

The library raises them with a message that names what was wrong and what was expected; a
caller such as the ROS node maps `kind` to its throttled warnings and counters instead of
re-deriving what went wrong.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input (a frame, a seed, a message); `kind` says which check failed."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class SeedError(InputError):
    """A seed cannot be used. Kinds: `seed_size`, `seed_empty`, `seed_ids`.

    Box / click seeds (`defvos_core.inference.prompts`) add `prompt_box` (a box that is
    malformed, empty or outside the frame) and `prompt_points` (no click, none positive,
    a bad label, or a click outside the frame); an id given twice is `seed_ids`.

    (An object smaller than the model's finest scale is kept, not refused: it is listed in
    `TrackResult.tiny_objects` so a caller can warn.)
    """


class FrameError(InputError):
    """A frame cannot be tracked.

    Kinds: `frame_format` (not (H, W, 3) uint8), `frame_size` (the size changed while objects
    are tracked), `frame_shape` (aspect ratio beyond `TrackerConfig.max_aspect_ratio`).
    """


class DepthError(InputError):
    """A depth frame or camera calibration cannot be used for 3D positions.

    Kinds: `depth_encoding` (not 16UC1 / 32FC1), `depth_size` (not the colour frame's size),
    `depth_data` (sizes, step or data length inconsistent), `camera_info_invalid` (K missing
    or zero), `camera_info_size` (calibrated for another image size).
    """
