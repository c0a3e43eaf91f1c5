"""Throughput, latency and drop counters of the node, read over periods by several consumers.

Every frame that arrives is either answered with a mask (``frame_processed``) or counted as
dropped with a reason (``frame_dropped``): the summary line and /diagnostics show both, so
nothing is lost silently. Latency is node latency: from the moment a frame's message is
received to the moment its mask is published (queueing + conversion + inference +
publishing), on the monotonic clock, meaningful whatever clock stamps the images.

Counters only grow; each consumer (the periodic log line, the 1 Hz diagnostics) owns a
`PeriodReader` that reports the change since its own previous read.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

#: Why a received frame got no mask (the summary and /diagnostics name these).
DROP_REASONS = {
    'stale': 'replaced by a newer frame before the worker took it',
    'no_objects': 'nothing is tracked yet',
    'inactive': 'the node is not active (lifecycle)',
    'invalid': 'the message could not be converted (logged as a warning)',
    'rejected': 'the tracker rejected the frame (size or shape; logged)',
    'preparing': 'graphs for a new frame size were being prepared',
    'error': 'an error while tracking (logged)',
    'seed_frame': 'used as the frame of a seed older than the last published mask',
}


@dataclass(frozen=True)
class Totals:
    """Running totals at one moment."""

    time_s: float  # time.monotonic()
    received: int
    processed: int
    rejected: int  # bad images and seeds (each also logged as a warning)
    dropped: dict[str, int] = field(default_factory=dict)  # by reason

    @property
    def dropped_total(self) -> int:
        """Return the frames dropped for any reason."""
        return sum(self.dropped.values())


@dataclass(frozen=True)
class StatsSummary:
    """Figures over one period (plus running totals)."""

    period_s: float
    frames_received: int
    frames_processed: int
    dropped: dict[str, int]  # this period, by reason
    inputs_rejected: int
    latency_p50_ms: Optional[float]
    latency_p95_ms: Optional[float]
    total_dropped: int
    total_rejected: int
    objects: int

    @property
    def frames_dropped(self) -> int:
        """Return the frames dropped this period, for any reason."""
        return sum(self.dropped.values())

    @property
    def fps_in(self) -> float:
        """Frames received per second."""
        return self.frames_received / self.period_s if self.period_s > 0 else 0.0

    @property
    def fps_out(self) -> float:
        """Masks published per second."""
        return self.frames_processed / self.period_s if self.period_s > 0 else 0.0

    def format(self) -> str:
        """Return the one-line summary the node logs."""
        if self.latency_p50_ms is None:
            latency = 'latency n/a'
        else:
            latency = (f'latency p50 {self.latency_p50_ms:.1f} ms '
                       f'p95 {self.latency_p95_ms:.1f} ms')
        reasons = ', '.join(f'{reason} {count}' for reason, count in sorted(self.dropped.items())
                            if count)
        return (f'{self.fps_out:.1f} fps (input {self.fps_in:.1f} fps) | {latency} | '
                f'dropped {self.frames_dropped}{f" ({reasons})" if reasons else ""} '
                f'(total {self.total_dropped}) | rejected {self.inputs_rejected} '
                f'(total {self.total_rejected}) | objects {self.objects}')


class PipelineStats:
    """Thread-safe running counters and recent latencies (bounded)."""

    def __init__(self, max_latency_samples: int = 10000) -> None:
        self._lock = threading.Lock()
        self._latencies: deque[tuple[float, float]] = deque(maxlen=max_latency_samples)
        self.total_received = self.total_processed = self.total_rejected = 0
        self.dropped: Counter[str] = Counter()

    @property
    def total_dropped(self) -> int:
        """Return the frames dropped so far, for any reason."""
        with self._lock:
            return sum(self.dropped.values())

    def frame_received(self) -> None:
        """Count a frame message received."""
        with self._lock:
            self.total_received += 1

    def frame_dropped(self, reason: str) -> None:
        """Count a frame that gets no mask, with one of `DROP_REASONS`."""
        if reason not in DROP_REASONS:
            raise ValueError(f'unknown drop reason {reason!r}')
        with self._lock:
            self.dropped[reason] += 1

    def input_rejected(self) -> None:
        """Count a bad image or seed."""
        with self._lock:
            self.total_rejected += 1

    def frame_processed(self, latency_s: float) -> None:
        """Count a mask published ``latency_s`` after its frame was received."""
        with self._lock:
            self.total_processed += 1
            self._latencies.append((time.monotonic(), latency_s))

    def totals(self, now: Optional[float] = None) -> Totals:
        """Return the running totals."""
        with self._lock:
            return Totals(time.monotonic() if now is None else now, self.total_received,
                          self.total_processed, self.total_rejected, dict(self.dropped))

    def latencies_ms(self, since_s: float) -> np.ndarray:
        """Return the latencies (ms) of masks published after monotonic time ``since_s``."""
        with self._lock:
            return np.asarray([latency for at, latency in self._latencies if at > since_s],
                              dtype=np.float64) * 1e3


class PeriodReader:
    """One consumer's view of `PipelineStats`: what changed since its previous read."""

    def __init__(self, stats: PipelineStats, now: Optional[float] = None) -> None:
        self.stats = stats
        self._last = stats.totals(now)

    def read(self, objects: int = 0, now: Optional[float] = None) -> StatsSummary:
        """Summarise the period since the previous read and start a new one."""
        current = self.stats.totals(now)
        last, self._last = self._last, current
        latencies = self.stats.latencies_ms(last.time_s)
        p50 = p95 = None
        if latencies.size:
            p50, p95 = (float(v) for v in np.percentile(latencies, [50, 95]))
        dropped = {reason: current.dropped.get(reason, 0) - last.dropped.get(reason, 0)
                   for reason in current.dropped}
        return StatsSummary(
            period_s=current.time_s - last.time_s,
            frames_received=current.received - last.received,
            frames_processed=current.processed - last.processed,
            dropped={reason: count for reason, count in dropped.items() if count},
            inputs_rejected=current.rejected - last.rejected,
            latency_p50_ms=p50, latency_p95_ms=p95,
            total_dropped=current.dropped_total, total_rejected=current.rejected,
            objects=objects)
