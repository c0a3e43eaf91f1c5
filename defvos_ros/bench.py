"""Benchmark of the ROS node: end-to-end latency, overhead over the bare tracker, and a soak.

    python -m defvos_ros.bench [--frames 60] [--soak 10000] [--soak-churn 300] [--size 240]
        [--threads 2] [--soak-size 64] [--camera-fps 30] [--backend torch] [--domain-id D]

1. Bare ``Tracker.step`` on the sample clip at processing size ``--size`` (in this process).
2. The node (``python -m defvos_ros``, its own process, same size and threads) over DDS:
   end-to-end latency from the camera stamp (set just before publishing) to the mask's
   arrival here, one frame at a time (lockstep); the node's overhead is its median minus
   the bare step's median (conversion, queueing, DDS both ways, publishing). Bare and node
   frames alternate in blocks of 5 so both meet the same load on a shared CPU.
3. A camera at ``--camera-fps`` faster than the model: masks received, frames dropped as
   stale by the node, and latency over the first and last halves (it must not grow).
4. Soak: ``--soak`` frames at ``--camera-fps`` through a fresh node, an object added
   (``~/add_objects``) or removed (``~/remove_objects``) every ``--soak-churn`` frames; RSS
   of the node process, latency p50/p99 and the memory tensors (from /diagnostics) at the
   start (after seeding and warm-up) and at the end. The soak uses small frames (the clip
   resized to a short side of ``--soak-size``, processed at that size) so that 10,000
   frames finish in minutes on a 2-core CPU; memory is bounded by the engine and the frame
   buffer whatever the frame size.

Only figures are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import rclpy
from defvos_interfaces.msg import ObjectPrompt
from defvos_interfaces.srv import AddObjects, RemoveObjects
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from defvos_core.config import BACKENDS, TrackerConfig
from defvos_ros.demo import SAMPLE, start_node_process, stop_node_process
from defvos_ros.image_conversion import numpy_to_image
from defvos_ros.ros_helpers import spin_in_thread, stamp_to_ns

# As in the node (defvos_ros/node.py): sleeping OpenMP threads, so that the bare tracker
# is timed the way the node runs it. Set before torch is imported (in bare_tracker).
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')


def rss_mb(pid: int) -> Optional[float]:
    """Return the resident set size of a process in MB (Linux /proc), or None."""
    try:
        for line in Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def percentiles(values_ms: Sequence[float]) -> str:
    """Return 'p50 X ms  p95 Y ms' of a list of milliseconds."""
    if not len(values_ms):
        return 'n/a'
    p50, p95 = np.percentile(np.asarray(values_ms), [50, 95])
    return f'p50 {p50:6.1f} ms  p95 {p95:6.1f} ms'


class BenchClient(Node):
    """Publishes stamped frames and a seed; records when each mask arrives."""

    def __init__(self) -> None:
        super().__init__('defvos_bench')
        reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.create_publisher(Image, 'image', reliable)
        self.seed_pub = self.create_publisher(Image, 'seed_mask', QoSProfile(depth=10))
        self.arrivals: dict[int, int] = {}  # stamp ns -> arrival time ns (system clock)
        self._arrived = threading.Condition()
        self.create_subscription(Image, 'defvos/masks', self._on_mask, QoSProfile(depth=100))

    def _on_mask(self, msg: Image) -> None:
        now = time.time_ns()
        with self._arrived:
            self.arrivals[stamp_to_ns(msg.header.stamp)] = now
            self._arrived.notify_all()

    def ready(self) -> bool:
        return (self.image_pub.get_subscription_count() > 0
                and self.seed_pub.get_subscription_count() > 0
                and self.count_publishers('/defvos/masks') > 0)

    def send(self, msg: Image) -> int:
        """Stamp ``msg`` now (ROS time = system time here) and publish it; returns the stamp."""
        msg.header.stamp = self.get_clock().now().to_msg()
        self.image_pub.publish(msg)
        return stamp_to_ns(msg.header.stamp)

    def seed(self, labels: np.ndarray, stamp: int) -> None:
        msg = numpy_to_image(labels.astype(np.uint8), 'mono8')
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
        self.seed_pub.publish(msg)

    def wait(self, stamp: int, timeout: float = 30.0) -> Optional[float]:
        """Wait for the mask of ``stamp``; returns the end-to-end latency in ms."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: stamp in self.arrivals, timeout):
                return None
            return (self.arrivals[stamp] - stamp) * 1e-6


def load_clip(short_side: Optional[int] = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Return the sample clip's frames (resized to ``short_side``) and first-frame seed."""
    from defvos_core.data.masks import read_label_map
    from defvos_core.data.video_io import iter_video_frames

    frames = [rgb for _, rgb in iter_video_frames(SAMPLE / 'frames')]
    seed = read_label_map(SAMPLE / 'masks' / '00000.png')
    if short_side:
        height, width = frames[0].shape[:2]
        scale = short_side / min(height, width)
        size = (max(2, round(width * scale)), max(2, round(height * scale)))
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
        seed = cv2.resize(seed, size, interpolation=cv2.INTER_NEAREST)
    return frames, seed


def ping_pong(frames: list, count: int) -> list:
    """Return ``count`` frames going back and forth through the clip (continuous motion)."""
    cycle = frames + frames[-2:0:-1]
    return [cycle[i % len(cycle)] for i in range(count)]


def bare_tracker(seed_frame: np.ndarray, seed: np.ndarray, args):
    """Return a seeded Tracker configured like the node (same size, threads, backend)."""
    import torch

    from defvos_core.build import build_tracker

    torch.set_num_threads(args.threads)
    tracker = build_tracker(args.weights or None,
                            TrackerConfig(size=args.size, backend=args.backend))
    tracker.add_objects(seed_frame, seed)
    return tracker


def time_steps(tracker, frames: list[np.ndarray]) -> list[float]:
    """Time ``tracker.step`` (ms) on each frame."""
    times = []
    for frame in frames:
        start = time.perf_counter()
        tracker.step(frame)
        times.append((time.perf_counter() - start) * 1e3)
    return times


class NodeSession:
    """A node process plus a bench client in this process, started and stopped together."""

    def __init__(self, parameters: dict, log_path: Path, timeout: float = 120.0) -> None:
        self.process = start_node_process(parameters, log_path)
        self.client = BenchClient()
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.client)
        self.thread = spin_in_thread(self.executor)
        deadline = time.monotonic() + timeout
        while not self.client.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f'the node did not start; log:\n{log_path.read_text()}')
            time.sleep(0.05)
        time.sleep(0.3)  # let the node's best-effort reader match our writer too

    def seed(self, frame: np.ndarray, seed: np.ndarray) -> None:
        msg = numpy_to_image(frame, 'rgb8')
        stamp = self.client.send(msg)
        time.sleep(0.05)
        self.client.seed(seed, stamp)
        if self.client.wait(stamp) is None:
            raise RuntimeError('the seed was not applied (no mask for the seed frame)')

    def lockstep(self, messages: list[Image]) -> list[float]:
        latencies = []
        for msg in messages:
            latency = self.client.wait(self.client.send(msg))
            if latency is not None:
                latencies.append(latency)
        return latencies

    def close(self) -> None:
        self.executor.shutdown()
        self.client.destroy_node()
        self.thread.join(timeout=5.0)
        stop_node_process(self.process)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print its figures."""
    if args.domain_id is not None:
        os.environ['ROS_DOMAIN_ID'] = str(args.domain_id)
    logs = Path(tempfile.mkdtemp(prefix='defvos_bench_'))
    frames, seed = load_clip()
    height, width = frames[0].shape[:2]
    sequence = ping_pong(frames, args.frames + 4)
    print(f'defvos bench: backend {args.backend}, {args.threads} torch thread(s), sample '
          f'clip {width}x{height} processed at size {args.size}; node logs in {logs}')
    print(f'load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (figures from a '
          'shared machine are only comparable within one run)')

    parameters = {'size': args.size, 'num_threads': args.threads, 'backend': args.backend,
                  'summary_period_sec': 0.0}
    if args.weights:
        parameters['weights'] = args.weights
    rclpy.init()
    try:
        session = NodeSession(parameters, logs / 'node.log')
        try:
            tracker = bare_tracker(sequence[0], seed, args)
            session.seed(sequence[0], seed)
            messages = [numpy_to_image(f, 'rgb8') for f in sequence[1:]]
            time_steps(tracker, sequence[1:4])  # warm-up, both
            session.lockstep(messages[:3])
            # Alternate blocks of 5 frames, so that both see the same load on a shared CPU.
            bare, e2e = [], []
            for block in range(3, len(messages), 5):
                bare += time_steps(tracker, sequence[block + 1:block + 6])
                e2e += session.lockstep(messages[block:block + 5])
            print(f'bare Tracker.step        ({len(bare)} frames): {percentiles(bare)}  '
                  f'({1e3 / np.median(bare):.1f} fps)')
            print(f'node end-to-end lockstep ({len(e2e)} frames): {percentiles(e2e)}  '
                  '(camera stamp -> mask received)')
            print(f'node overhead over bare step: {np.median(e2e) - np.median(bare):+.1f} ms '
                  '(p50 difference: conversion, queueing, DDS both ways, publishing)')
            camera(session, messages, args.camera_fps)
            print(f'load average {os.getloadavg()[0]:.1f}')
        finally:
            session.close()
        if args.soak:
            soak(args, parameters, logs)
    finally:
        rclpy.try_shutdown()
    return 0


def camera(session: NodeSession, messages: list[Image], fps: float) -> None:
    """Publish at ``fps`` regardless of the model; print masks, drops and latency halves."""
    stamps = []
    start = time.monotonic()
    for index, msg in enumerate(messages):
        delay = start + index / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stamps.append(session.client.send(msg))
    time.sleep(1.0)
    arrivals = session.client.arrivals
    latencies = [(arrivals[s] - s) * 1e-6 for s in stamps if s in arrivals]
    half = len(latencies) // 2
    print(f'camera at {fps:g} fps ({len(stamps)} frames): {len(latencies)} masks, '
          f'{len(stamps) - len(latencies)} stale frames dropped; latency '
          f'{percentiles(latencies)}; first half p50 '
          f'{np.median(latencies[:half] or [np.nan]):.1f} ms, last half p50 '
          f'{np.median(latencies[half:] or [np.nan]):.1f} ms (no accumulation)')


class SoakProbe:
    """The soak's extra channels: object services and the node's /diagnostics figures."""

    def __init__(self, client: Node) -> None:
        self.add = client.create_client(AddObjects, 'defvos/add_objects')
        self.remove = client.create_client(RemoveObjects, 'defvos/remove_objects')
        self.figures: dict[str, str] = {}
        client.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.calls: list = []

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(': tracking'):
                self.figures = {item.key: item.value for item in status.values}

    def memory(self) -> str:
        """Return the node's last reported memory tensors (frames, MB)."""
        return (f"{self.figures.get('memory frames', '?')} frames, "
                f"{self.figures.get('memory (MB)', '?')} MB")

    def add_box(self, object_id: str, stamp: int, shape: tuple[int, int],
                rng: np.random.Generator) -> None:
        """Ask the node to add a box-shaped mask object at the frame stamped ``stamp``."""
        height, width = shape
        mask = np.zeros(shape, np.uint8)
        top, left = int(rng.integers(0, height // 2)), int(rng.integers(0, width // 2))
        mask[top:top + height // 3, left:left + width // 3] = 1
        prompt = ObjectPrompt(id=object_id, kind=ObjectPrompt.KIND_MASK,
                              mask=numpy_to_image(mask, 'mono8'))
        request = AddObjects.Request(objects=[prompt])
        request.header.stamp.sec, request.header.stamp.nanosec = divmod(stamp, 10**9)
        self.calls.append(self.add.call_async(request))

    def remove_ids(self, *object_ids: str) -> None:
        """Ask the node to stop tracking ``object_ids``."""
        self.calls.append(self.remove.call_async(RemoveObjects.Request(ids=list(object_ids))))


def soak(args: argparse.Namespace, parameters: dict, logs: Path) -> None:
    """Run ``args.soak`` frames at camera rate through a fresh node, with object churn.

    An object is added or removed every ``args.soak_churn`` frames; RSS, latency and memory
    are printed at the start and the end.
    """
    frames, seed = load_clip(args.soak_size)
    height, width = frames[0].shape[:2]
    print(f'soak: {args.soak} frames of {width}x{height} at {args.camera_fps:g} fps, processed '
          f'at size {args.soak_size}, an object added or removed every {args.soak_churn} '
          'frames (small frames so that 10,000 finish in minutes on a 2-core CPU)')
    session = NodeSession(dict(parameters, size=args.soak_size), logs / 'soak_node.log')
    try:
        pid, client = session.process.pid, session.client
        probe = SoakProbe(client)
        session.seed(frames[0], seed)
        messages = [numpy_to_image(f, 'rgb8') for f in ping_pong(frames, 60)]
        session.lockstep(messages)  # warm-up: memory fills up to its bounds
        time.sleep(1.5)  # one /diagnostics period: the memory figures of the full memory
        start_rss, start_memory = rss_mb(pid), probe.memory()
        rng = np.random.default_rng(0)
        stamps, extra = [], 0
        started = time.monotonic()
        for index in range(args.soak):
            delay = started + index / args.camera_fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            stamps.append(client.send(messages[index % len(messages)]))
            if index and index % args.soak_churn == 0:
                if extra % 2 == 0:
                    probe.add_box(f'extra{extra}', stamps[-1], (height, width), rng)
                else:
                    probe.remove_ids(f'extra{extra - 1}')
                extra += 1
        time.sleep(2.0)
        end_rss, end_memory = rss_mb(pid), probe.memory()
        arrivals = client.arrivals
        latencies = [(arrivals[s] - s) * 1e-6 for s in stamps if s in arrivals]
        window = max(1, min(1000, len(latencies) // 4))

        def p50_p99(values: list[float]) -> str:
            if not values:
                return 'n/a'
            p50, p99 = np.percentile(values, [50, 99])
            return f'p50 {p50:.1f} ms p99 {p99:.1f} ms'

        answered = sum(call.done() and call.result() is not None for call in probe.calls)
        print(f'  masks {len(latencies)} of {len(stamps)} frames (the rest dropped as stale: '
              f'the model is slower than the camera); {answered}/{len(probe.calls)} object '
              'requests answered')
        print(f'  start: RSS {start_rss:.1f} MB, latency {p50_p99(latencies[:window])} '
              f'(first {window} masks), memory {start_memory}')
        print(f'  end:   RSS {end_rss:.1f} MB, latency {p50_p99(latencies[-window:])} '
              f'(last {window} masks), memory {end_memory}')
        print(f'soak RSS {end_rss - start_rss:+.1f} MB over {args.soak} frames')
    finally:
        session.close()


def build_parser() -> argparse.ArgumentParser:
    """Return the command line of ``python -m defvos_ros.bench``."""
    parser = argparse.ArgumentParser(prog='python -m defvos_ros.bench', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--frames', type=int, default=60, help='frames timed per measurement')
    parser.add_argument('--soak', type=int, default=0, help='soak frames (0 = no soak)')
    parser.add_argument('--soak-churn', type=int, default=300,
                        help='frames between object additions/removals in the soak')
    parser.add_argument('--size', type=int, default=TrackerConfig.size, help='processing size')
    parser.add_argument('--soak-size', type=int, default=64, help='frame size of the soak')
    parser.add_argument('--threads', type=int, default=2, help='torch threads')
    parser.add_argument('--camera-fps', type=float, default=30.0)
    parser.add_argument('--weights', default='')
    parser.add_argument('--backend', default=TrackerConfig.backend, choices=BACKENDS)
    parser.add_argument('--domain-id', type=int, help="ROS_DOMAIN_ID (default: the env's)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m defvos_ros.bench``."""
    return run(build_parser().parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
