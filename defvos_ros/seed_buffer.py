"""A bounded ring buffer of recent camera frames, looked up by stamp to pair late seed masks.

A seed mask names its camera frame by ``header.stamp``. It usually arrives after that frame
(an operator or a detector needs time to draw it), and on its own topic, so arrival order is
not guaranteed. The node keeps the last ``capacity`` frames here (the raw messages: nothing
is converted until a seed needs the frame) and pairs each seed with the frame whose stamp is
nearest to the seed's, within a tolerance.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Generic, Optional, TypeVar

Item = TypeVar('Item')


@dataclass(frozen=True)
class BufferedFrame(Generic[Item]):
    """A frame as received: its stamp, the message, and when it arrived."""

    stamp_ns: int  # header.stamp in nanoseconds
    item: Item  # the message (sensor_msgs/Image or CompressedImage)
    received_ns: int = 0  # time.monotonic_ns() at receipt, for latency figures


class FrameRingBuffer(Generic[Item]):
    """The last ``capacity`` frames in arrival order; thread-safe, memory bounded."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f'frame buffer capacity must be >= 1, got {capacity}')
        self._frames: deque[BufferedFrame[Item]] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        """Most frames kept; the oldest is dropped when a new one arrives."""
        return self._frames.maxlen or 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def push(self, frame: BufferedFrame[Item]) -> None:
        """Append a frame (dropping the oldest when full)."""
        with self._lock:
            self._frames.append(frame)

    def match(self, stamp_ns: int, tolerance_ns: int) -> Optional[BufferedFrame[Item]]:
        """Return the frame whose stamp is nearest to ``stamp_ns``, if within ``tolerance_ns``.

        Stamps need not be monotonic (a looped bag replay restarts them). Among frames
        equally near, the most recently received one wins.
        """
        if tolerance_ns < 0:
            raise ValueError(f'tolerance must be >= 0 ns, got {tolerance_ns}')
        best: Optional[BufferedFrame[Item]] = None
        best_distance = tolerance_ns + 1
        with self._lock:
            for frame in self._frames:
                distance = abs(frame.stamp_ns - stamp_ns)
                if distance <= best_distance:
                    best, best_distance = frame, distance
        return best if best_distance <= tolerance_ns else None

    def span(self) -> Optional[tuple[int, int]]:
        """Return the (oldest, newest) stamps held in nanoseconds, or None when empty."""
        with self._lock:
            if not self._frames:
                return None
            stamps = [frame.stamp_ns for frame in self._frames]
        return min(stamps), max(stamps)

    def clear(self) -> None:
        """Forget every frame."""
        with self._lock:
            self._frames.clear()
