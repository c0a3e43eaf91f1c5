"""Throttled warnings about bad input: one throttle per kind, plus counters."""

from __future__ import annotations

import threading
from collections import Counter

import rclpy.logging

from defvos_ros.stats import PipelineStats


class InputWarnings:
    """Log each kind of rejected input at most once per throttle period, and count them all.

    Each line ends with its kind in brackets (e.g. ``[image_encoding]``), so logs can be
    filtered by kind.

    rclpy throttles per call site and logger object, so each kind gets its own logger
    object (same name as the node's logger, so it reaches /rosout as the node's).
    """

    def __init__(self, logger_name: str, throttle_sec: float, stats: PipelineStats) -> None:
        self._logger_name = logger_name
        self._throttle_sec = throttle_sec
        self._stats = stats
        self._loggers: dict = {}
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def warn(self, kind: str, message: str, rejected: bool = True) -> None:
        """Count a problem of ``kind`` and log ``message`` (throttled per kind).

        ``rejected``: the problem is a rejected input (counted in the stats' ``inputs
        rejected``); False for a result that is only poorer (e.g. an object without depth).
        """
        with self._lock:
            self.counts[kind] += 1
            logger = self._loggers.get(kind)
            if logger is None:
                logger = self._loggers[kind] = rclpy.logging.get_logger(self._logger_name)
        if rejected:
            self._stats.input_rejected()
        logger.warning(f'{message} [{kind}]', throttle_duration_sec=self._throttle_sec)
