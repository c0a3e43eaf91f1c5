"""Whether each tracked object is in view, and for how many frames it has been lost.

An object is present in a frame when at least `min_area_fraction` of the frame's pixels carry
its label; otherwise it is reported lost (absent) with the number of frames since it was
last seen, so a consumer can tell a brief occlusion from an object that left.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Presence:
    """One object's state after a frame."""

    present: bool
    frames_since_seen: int  # 0 when present


class PresenceTracker:
    """Per-object presence over a stream; objects are added and forgotten by id."""

    def __init__(self, min_area_fraction: float = 0.0) -> None:
        if not 0.0 <= min_area_fraction < 1.0:
            raise ValueError(f"min_area_fraction must be in [0, 1), got {min_area_fraction}")
        self.min_area_fraction = min_area_fraction
        self._since_seen: dict[int, int] = {}

    def update(self, area: dict[int, int], pixels: int) -> dict[int, Presence]:
        """Record a frame's per-object pixel counts (`TrackResult.area`); return each state.

        Objects not in `area` are forgotten (removed or reset).
        """
        self._since_seen = {object_id: self._since_seen.get(object_id, 0)
                            for object_id in area}
        states = {}
        for object_id, count in area.items():
            present = count > 0 and count >= self.min_area_fraction * pixels
            since = 0 if present else self._since_seen[object_id] + 1
            self._since_seen[object_id] = since
            states[object_id] = Presence(present, since)
        return states

    def clear(self) -> None:
        """Forget every object."""
        self._since_seen.clear()
