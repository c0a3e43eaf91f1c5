"""Small ROS helpers shared by the node and its tools: stamps and a background executor."""

from __future__ import annotations

import threading

from builtin_interfaces.msg import Time
from rclpy.executors import Executor, ExternalShutdownException


def stamp_to_ns(stamp: Time) -> int:
    """Return a builtin_interfaces/Time as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> Time:
    """Return integer nanoseconds as a builtin_interfaces/Time."""
    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def format_stamp(stamp_ns: int) -> str:
    """Return a stamp as 'sec.nanosec' (what `ros2 topic echo` shows)."""
    return f'{stamp_ns // 1_000_000_000}.{stamp_ns % 1_000_000_000:09d}'


def spin_in_thread(executor: Executor) -> threading.Thread:
    """Spin ``executor`` in a daemon thread until it is shut down."""
    def spin() -> None:
        try:
            executor.spin()
        except ExternalShutdownException:
            pass

    thread = threading.Thread(target=spin, name='defvos-executor', daemon=True)
    thread.start()
    return thread
