"""Pairs a colour frame with the buffered depth frame of the nearest stamp (bounded memory).

A depth camera publishes its aligned depth image on its own topic, so a colour frame and
its depth frame arrive in either order and either may be lost. The matcher keeps the last
``capacity`` depth items (whatever they are: the node stores the raw messages, converted
only when used) and answers a colour stamp with the nearest one within a tolerance, or says
why there is none: nothing received yet (``missing``), or the nearest is too old (``stale``)
or too new (``future``). When every held stamp is older, the pair may still be on its way:
``match`` can wait a bounded time for it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Generic, Optional, TypeVar

Item = TypeVar("Item")

MATCHED, MISSING, STALE, FUTURE = "matched", "missing", "stale", "future"


@dataclass(frozen=True)
class StampMatch(Generic[Item]):
    """The answer for one stamp: the item (None unless ``outcome`` is ``matched``)."""

    outcome: str  # MATCHED, MISSING, STALE or FUTURE
    item: Optional[Item] = None
    stamp_ns: Optional[int] = None  # the nearest held stamp (None when nothing is held)
    offset_ns: int = 0  # nearest held stamp - the asked stamp


class StampMatcher(Generic[Item]):
    """The last ``capacity`` (stamp, item) pairs; thread-safe (one pushes, another matches)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"stamp matcher capacity must be >= 1, got {capacity}")
        self._items: deque[tuple[int, Item]] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def push(self, stamp_ns: int, item: Item) -> None:
        """Add an item (the oldest received is forgotten when full)."""
        with self._arrived:
            self._items.append((stamp_ns, item))
            self._arrived.notify_all()

    def match(self, stamp_ns: int, tolerance_ns: int, wait_s: float = 0.0) -> StampMatch[Item]:
        """Return the item whose stamp is nearest to ``stamp_ns`` if within ``tolerance_ns``.

        Stamps need not arrive in order; among equally near ones the last received wins.
        wait_s: while every held stamp is older than ``stamp_ns`` (the pair may still come),
        wait up to this long for newer items; nothing held or a newer one held: no wait.
        """
        if tolerance_ns < 0:
            raise ValueError(f"tolerance must be >= 0 ns, got {tolerance_ns}")
        deadline = time.monotonic() + wait_s
        with self._arrived:
            while True:
                items = list(self._items)
                remaining = deadline - time.monotonic()
                if (not items or remaining <= 0
                        or max(stamp for stamp, _ in items) >= stamp_ns - tolerance_ns):
                    break
                self._arrived.wait(remaining)
        if not items:
            return StampMatch(MISSING)
        best_stamp, best_item = min(reversed(items), key=lambda pair: abs(pair[0] - stamp_ns))
        offset = best_stamp - stamp_ns
        if abs(offset) <= tolerance_ns:
            return StampMatch(MATCHED, best_item, best_stamp, offset)
        return StampMatch(STALE if offset < 0 else FUTURE, None, best_stamp, offset)

    def clear(self) -> None:
        """Forget every item."""
        with self._lock:
            self._items.clear()
