"""Benchmark of the node's 3D step: what a frame costs once its masks are out.

    python -m defvos_ros.bench_3d [--objects 5] [--frames 300] [--encoding 16UC1]

On the sample clip's frames (427x240: the 240p processing size) with their ground-truth
bear plus ``--objects - 1`` ellipses of 40x25 to 70x45 pixels as the label map, and a
synthetic depth image (a wall at 3 m, the objects nearer, 10 % of the pixels without a
reading), times exactly what the node's worker runs after publishing the masks: pairing
the depth frame by stamp, converting it, measuring every object (`Objects3DStage.measure`)
and building the Object3DArray; then, apart, the point cloud and the markers, which the
node builds only while someone subscribes. With an empty ``depth_topic`` the node runs none
of it. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from defvos_core.data.masks import read_label_map
from defvos_ros.demo import SAMPLE
from defvos_ros.image_conversion import numpy_to_image
from defvos_ros.messages_3d import cloud_message, markers_message, objects_3d_message
from defvos_ros.objects_3d import Objects3DStage
from defvos_ros.parameters import NodeSettings
from defvos_ros.ros_helpers import ns_to_stamp
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header


def scene(mask: np.ndarray, objects: int, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray]:
    """Return (labels, depth in mm): the bear as object 1 plus ellipses, over a 3 m wall."""
    labels = (mask > 0).astype(np.uint8)
    height, width = labels.shape
    for value in range(2, objects + 1):
        centre = (int(rng.integers(40, width - 40)), int(rng.integers(30, height - 30)))
        axes = (int(rng.integers(20, 36)), int(rng.integers(12, 23)))
        cv2.ellipse(labels, centre, axes, 0, 0, 360, value, -1)
    depth = np.full(labels.shape, 3000, np.uint16)
    for value in range(1, objects + 1):
        depth[labels == value] = 1000 + 300 * value
    depth[rng.random(depth.shape) < 0.1] = 0  # no reading
    return labels, depth


def time_ms(work: Callable[[], object], frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (wall, CPU) ms of each of ``frames`` calls of ``work`` (after 10 warm-ups).

    CPU: this thread's CPU time, the cost itself; wall time also counts the time other
    processes held the core (on a shared CPU the two differ).
    """
    for _ in range(10):
        work()
    wall, cpu = [], []
    for _ in range(frames):
        start_wall, start_cpu = time.perf_counter(), time.thread_time()
        work()
        cpu.append((time.thread_time() - start_cpu) * 1e3)
        wall.append((time.perf_counter() - start_wall) * 1e3)
    return np.asarray(wall), np.asarray(cpu)


def summary(times: tuple[np.ndarray, np.ndarray]) -> str:
    """Return 'CPU p50 X ms p95 Y ms | wall p50 X ms p95 Y ms'."""
    (wall50, wall95), (cpu50, cpu95) = (np.percentile(t, [50, 95]) for t in times)
    return (f'CPU p50 {cpu50:5.2f} ms p95 {cpu95:5.2f} ms | wall p50 {wall50:5.2f} ms '
            f'p95 {wall95:5.2f} ms')


def run(args: argparse.Namespace) -> None:
    """Time the 3D step and print the figures."""
    rng = np.random.default_rng(0)
    mask = read_label_map(sorted((SAMPLE / 'masks').glob('*.png'))[0])
    labels, depth = scene(mask, args.objects, rng)
    height, width = labels.shape
    settings = NodeSettings()
    stage = Objects3DStage(settings.objects_3d_config(), settings.depth_tolerance_sec,
                           settings.depth_buffer_size, lambda *_, **__: None)
    stamp = 1_700_000_000 * 10**9
    values = list(range(1, args.objects + 1))
    ids = {value: f'object{value}' for value in values}
    header = Header(frame_id='camera_color_optical_frame', stamp=ns_to_stamp(stamp))
    image = depth if args.encoding == '16UC1' else (depth / 1000.0).astype(np.float32)
    for offset in range(settings.depth_buffer_size):  # a full buffer, as in a running node
        stage.add_depth(numpy_to_image(image, args.encoding,
                                       Header(stamp=ns_to_stamp(stamp - offset * 33_000_000))))
    stage.set_camera_info(CameraInfo(width=width, height=height,
                                     k=[300.0, 0, width / 2, 0, 300.0, height / 2, 0, 0, 1]))
    frame = stage.measure(labels, values, stamp)
    located = sum(position.ok for position in frame.positions.values())
    share = np.mean(labels > 0)
    print(f'3D step at {width}x{height}, {args.objects} objects ({located} located, '
          f'{share:.0%} of the frame), depth {args.encoding}, {args.frames} frames; load '
          f'average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs')
    step = time_ms(lambda: objects_3d_message(stage.measure(labels, values, stamp), ids,
                                              header), args.frames)
    print(f'  objects_3d (pair + convert + measure + message): {summary(step)}')
    cloud = time_ms(lambda: cloud_message(frame, header, settings.depth_cloud_max_points),
                    args.frames)
    print(f'  + ~/objects_cloud while subscribed ({settings.depth_cloud_max_points} points '
          f'max): {summary(cloud)}')
    markers = time_ms(lambda: markers_message(frame, ids, header), args.frames)
    print(f'  + ~/objects_markers while subscribed: {summary(markers)}')


def build_parser() -> argparse.ArgumentParser:
    """Return the command line of ``python -m defvos_ros.bench_3d``."""
    parser = argparse.ArgumentParser(prog='python -m defvos_ros.bench_3d', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--objects', type=int, default=5, help='objects in the label map')
    parser.add_argument('--frames', type=int, default=300, help='frames timed')
    parser.add_argument('--encoding', default='16UC1', choices=('16UC1', '32FC1'))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m defvos_ros.bench_3d``."""
    run(build_parser().parse_args(argv))
    return 0


if __name__ == '__main__':
    sys.exit(main())
