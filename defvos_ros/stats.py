"""Throughput, latency and drop counters of the node, summarised in one log line.

Latency here is node latency: from the moment a frame's message is received to the moment
its mask is published (queueing + conversion + inference + publishing). It is measured with
the monotonic clock, so it is meaningful whatever clock stamps the images (bag replay, sim
time). End-to-end latency from the camera stamp is measured by ``defvos_ros.bench``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class StatsSummary:
    """Figures over one summary period (plus running totals)."""

    period_s: float
    frames_received: int
    frames_processed: int
    frames_dropped: int  # stale frames replaced by a newer one before inference
    inputs_rejected: int  # bad images and seeds (each also logged as a warning)
    latency_p50_ms: Optional[float]
    latency_p95_ms: Optional[float]
    total_dropped: int
    total_rejected: int
    objects: int

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
        return (f'{self.fps_out:.1f} fps (input {self.fps_in:.1f} fps) | {latency} | '
                f'dropped {self.frames_dropped} (total {self.total_dropped}) | '
                f'rejected {self.inputs_rejected} (total {self.total_rejected}) | '
                f'objects {self.objects}')


class PipelineStats:
    """Thread-safe counters; ``summary()`` reads and restarts the current period."""

    def __init__(self, max_latency_samples: int = 10000) -> None:
        self._lock = threading.Lock()
        self._latencies_s: deque[float] = deque(maxlen=max_latency_samples)  # bounded
        self._received = self._processed = self._dropped = self._rejected = 0
        self.total_received = self.total_processed = 0
        self.total_dropped = self.total_rejected = 0
        self._period_start = time.monotonic()

    def frame_received(self) -> None:
        """Count a frame message received."""
        with self._lock:
            self._received += 1
            self.total_received += 1

    def frame_dropped(self) -> None:
        """Count a stale frame replaced by a newer one before it was processed."""
        with self._lock:
            self._dropped += 1
            self.total_dropped += 1

    def input_rejected(self) -> None:
        """Count a bad image or seed."""
        with self._lock:
            self._rejected += 1
            self.total_rejected += 1

    def frame_processed(self, latency_s: float) -> None:
        """Count a mask published ``latency_s`` after its frame was received."""
        with self._lock:
            self._processed += 1
            self.total_processed += 1
            self._latencies_s.append(latency_s)

    def summary(self, objects: int = 0, now: Optional[float] = None) -> StatsSummary:
        """Summarise the period since the last call and start a new one."""
        now = time.monotonic() if now is None else now
        with self._lock:
            latencies = np.asarray(self._latencies_s, dtype=np.float64) * 1e3
            p50 = p95 = None
            if latencies.size:
                p50, p95 = (float(v) for v in np.percentile(latencies, [50, 95]))
            result = StatsSummary(
                period_s=now - self._period_start, frames_received=self._received,
                frames_processed=self._processed, frames_dropped=self._dropped,
                inputs_rejected=self._rejected, latency_p50_ms=p50, latency_p95_ms=p95,
                total_dropped=self.total_dropped, total_rejected=self.total_rejected,
                objects=objects)
            self._received = self._processed = self._dropped = self._rejected = 0
            self._latencies_s.clear()
            self._period_start = now
        return result
