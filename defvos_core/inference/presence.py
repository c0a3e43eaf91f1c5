"""Whether each tracked object is in view, and for how many frames it has been lost.

When an object is fully hidden the network still segments something where it was (the
occluder, a look-alike): its mask does not vanish, but its confidence (mean probability over
its pixels) drops below what that object usually scores. So an object is reported present in
a frame when its mask covers at least ``min_area_fraction`` of the frame and its confidence
is at least ``reference - confidence_drop``, the reference being the median confidence of its
last ``window`` present frames; otherwise it is absent, its pixels are left out of the label
map, and ``frames_since_seen`` counts up until it is found again. Seed frames mark their
objects present without entering the reference.

Defaults chosen on synthetic full occlusions of the training sequences (see
`defvos_core.evaluation.occlusion` and the README's Results).
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

from defvos_core.config import PresenceConfig


@dataclass(frozen=True)
class Presence:
    """One object's state after a frame."""

    present: bool
    frames_since_seen: int  # 0 when present


class PresenceTracker:
    """Per-object presence over a stream; objects are added and forgotten by id."""

    def __init__(self, config: PresenceConfig | None = None) -> None:
        self.config = config or PresenceConfig()
        self._since_seen: dict[int, int] = {}
        self._confidence: dict[int, deque[float]] = {}

    def seeded(self, object_ids: list[int], tracked: list[int]) -> dict[int, Presence]:
        """Mark a seed frame's objects present (their reference starts afresh)."""
        self._forget_all_but(tracked)
        for object_id in object_ids:
            self._since_seen[object_id] = 0
            self._confidence[object_id] = deque(maxlen=self.config.window)
        return {object_id: Presence(self._since_seen.get(object_id, 0) == 0,
                                    self._since_seen.get(object_id, 0))
                for object_id in tracked}

    def update(self, area: dict[int, int], confidence: dict[int, float],
               pixels: int) -> dict[int, Presence]:
        """Record a tracked frame's per-object pixel counts and confidences; return each state.

        Objects not in `area` are forgotten (removed or reset).
        """
        self._forget_all_but(list(area))
        config = self.config
        states = {}
        for object_id, count in area.items():
            history = self._confidence.setdefault(object_id, deque(maxlen=config.window))
            score = confidence.get(object_id, 0.0)
            present = count > 0 and count >= config.min_area_fraction * pixels
            if present and config.confidence_drop > 0 and history:
                reference = statistics.median(history)
                present = score >= reference - config.confidence_drop
            if present:
                history.append(score)
            since = 0 if present else self._since_seen.get(object_id, 0) + 1
            self._since_seen[object_id] = since
            states[object_id] = Presence(present, since)
        return states

    def restart(self, object_ids: list[int]) -> None:
        """Drop these objects' reference (their next present frames start a new one).

        For objects whose score changes scale (regrouped identity banks); an absent one
        counts as present again at its next frame with a mask.
        """
        for object_id in object_ids:
            if object_id in self._confidence:
                self._confidence[object_id].clear()

    def snapshot(self) -> tuple[dict[int, int], dict[int, deque[float]]]:
        """Return a copy of the state, for `restore`."""
        return dict(self._since_seen), {i: deque(h, maxlen=h.maxlen)
                                        for i, h in self._confidence.items()}

    def restore(self, state: tuple[dict[int, int], dict[int, deque[float]]]) -> None:
        """Return to a `snapshot`."""
        self._since_seen, self._confidence = dict(state[0]), dict(state[1])

    def clear(self) -> None:
        """Forget every object."""
        self._since_seen.clear()
        self._confidence.clear()

    def _forget_all_but(self, object_ids: list[int]) -> None:
        keep = set(object_ids)
        for table in (self._since_seen, self._confidence):
            for object_id in [i for i in table if i not in keep]:
                del table[object_id]
