"""Record the node's output: an overlay .mp4, and optionally a rosbag2 of the masks.

    python -m defvos_ros.recorder --out DIR [--bag OUT_BAG] [--storage sqlite3|mcap]
        [--fps 10] [--save-masks] [--masks-topic defvos/masks]
        [--overlay-topic defvos/overlay] [--max-frames N] [--idle-timeout S] [--ros-args ...]

Subscribes the masks (sensor_msgs/Image mono8) and the overlay (rgb8) of a defvos node.
Writes ``DIR/overlay.mp4`` from the overlay (the node computes it only while someone
subscribes, which this recorder does), ``DIR/masks/<sec>_<nanosec>.png`` label maps with
``--save-masks``, and the mask messages as they arrived into a new rosbag2 with ``--bag``
(rosbags Writer; bag time = receive time, headers untouched). Stops on Ctrl-C, after
``--max-frames`` masks, or after ``--idle-timeout`` seconds without a mask.
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import Image

from defvos_core.data.masks import write_label_map
from defvos_core.data.video_io import VideoWriter
from defvos_ros.image_conversion import ImageConversionError, image_to_labels, image_to_rgb
from defvos_ros.ros_helpers import stamp_to_ns

IMAGE_MSGTYPE = 'sensor_msgs/msg/Image'


def open_bag_writer(path: Path, storage: str = 'sqlite3'):
    """Open a new rosbag2 for writing (rosbags Writer, format version 9)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugins = {'sqlite3': StoragePlugin.SQLITE3, 'mcap': StoragePlugin.MCAP}
    if storage not in plugins:
        raise ValueError(f'unknown bag storage {storage!r}; expected one of {sorted(plugins)}')
    if path.exists():
        raise FileExistsError(f'{path}: the bag already exists (rosbags writes new bags only)')
    writer = Writer(path, version=9, storage_plugin=plugins[storage])
    writer.open()
    return writer


def add_image_connection(writer, topic: str):
    """Declare a sensor_msgs/msg/Image topic (Kilted message definition) in a bag writer."""
    from rosbags.typesys import Stores, get_typestore

    return writer.add_connection(topic, IMAGE_MSGTYPE,
                                 typestore=get_typestore(Stores.ROS2_KILTED))


class BagWriterThread:
    """Writes serialized Image messages of one topic to a new rosbag2 from its own thread.

    The sqlite3 storage may only be used from the thread that opened it, and disk writes
    should stay off the executor: the bag is opened, written and closed in this thread.
    """

    def __init__(self, path: Path, topic: str, storage: str = 'sqlite3') -> None:
        self.path = path
        self._queue: queue.Queue = queue.Queue(maxsize=1000)
        self._opened = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(topic, storage),
                                        name='defvos-bag-writer', daemon=True)
        self._thread.start()
        self._opened.wait()
        if self._error is not None:
            raise self._error

    def _run(self, topic: str, storage: str) -> None:
        try:
            writer = open_bag_writer(self.path, storage)
            connection = add_image_connection(writer, topic)
        except (OSError, ValueError) as error:
            self._error = error
            self._opened.set()
            return
        self._opened.set()
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                writer.write(connection, *item)
        finally:
            writer.close()

    def write(self, timestamp_ns: int, data: bytes) -> None:
        """Queue one serialized message with its bag timestamp."""
        self._queue.put((timestamp_ns, data))

    def close(self) -> None:
        """Write what is queued and finish the bag."""
        self._queue.put(None)
        self._thread.join()


class Recorder(Node):
    """Writes the overlay video, mask PNGs and a masks bag from a running defvos node."""

    def __init__(self, out_dir: str | Path, bag: Optional[str | Path] = None,
                 storage: str = 'sqlite3', masks_topic: str = 'defvos/masks',
                 overlay_topic: str = 'defvos/overlay', fps: float = 10.0,
                 save_masks: bool = False, keep_masks: bool = False,
                 node_name: str = 'defvos_recorder', **node_options) -> None:
        super().__init__(node_name, **node_options)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.video_path = self.out_dir / 'overlay.mp4'
        self.masks_dir = self.out_dir / 'masks' if save_masks else None
        self.keep_masks = keep_masks
        self.masks: dict[int, np.ndarray] = {}  # stamp ns -> (H, W) uint8, with keep_masks
        self.masks_received = 0
        self.overlays_received = 0
        self.last_message_time = time.monotonic()
        self._lock = threading.Lock()
        self._video: Optional[VideoWriter] = VideoWriter(self.video_path, fps)
        self._bag: Optional[BagWriterThread] = None
        self.bag_path = Path(bag) if bag else None
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.masks_sub = self.create_subscription(Image, masks_topic, self._on_mask, qos)
        self.overlay_sub = self.create_subscription(Image, overlay_topic, self._on_overlay, qos)
        if self.bag_path is not None:
            self._bag = BagWriterThread(self.bag_path, self.masks_sub.topic_name, storage)

    def _on_mask(self, msg: Image) -> None:
        with self._lock:
            self.last_message_time = time.monotonic()
            try:
                labels = image_to_labels(msg).astype(np.uint8)
            except ImageConversionError as error:
                self.get_logger().warning(f'mask skipped: {error}', throttle_duration_sec=5.0)
                return
            self.masks_received += 1
            stamp = stamp_to_ns(msg.header.stamp)
            if self.keep_masks:
                self.masks[stamp] = labels
            if self.masks_dir is not None:
                name = f'{stamp // 1_000_000_000}_{stamp % 1_000_000_000:09d}.png'
                write_label_map(self.masks_dir / name, labels)
            if self._bag is not None:
                self._bag.write(self.get_clock().now().nanoseconds, serialize_message(msg))

    def _on_overlay(self, msg: Image) -> None:
        with self._lock:
            if self._video is None:
                return
            try:
                self._video.write(image_to_rgb(msg))
                self.overlays_received += 1
            except (ImageConversionError, ValueError) as error:
                self.get_logger().warning(f'overlay frame skipped: {error}',
                                          throttle_duration_sec=5.0)

    def close(self) -> dict[str, Optional[Path]]:
        """Finish the files; returns the paths written (None where nothing was written)."""
        with self._lock:
            video = None
            if self._video is not None:
                video = self.video_path if self._video.frames_written else None
                self._video.close()
                self._video = None
            bag = None
            if self._bag is not None:
                self._bag.close()
                self._bag, bag = None, self.bag_path
        return {'video': video, 'bag': bag, 'masks_dir': self.masks_dir}


def build_parser() -> argparse.ArgumentParser:
    """Return the command line of ``python -m defvos_ros.recorder``."""
    parser = argparse.ArgumentParser(
        prog='python -m defvos_ros.recorder',
        description="Record a defvos node's overlay to an mp4 and its masks to a rosbag2.")
    parser.add_argument('--out', required=True, help='output folder (overlay.mp4, masks/)')
    parser.add_argument('--bag', help='new rosbag2 folder to write the masks into')
    parser.add_argument('--storage', default='sqlite3', choices=('sqlite3', 'mcap'),
                        help='storage plugin of --bag')
    parser.add_argument('--fps', type=float, default=10.0, help='frame rate of overlay.mp4')
    parser.add_argument('--save-masks', action='store_true',
                        help='also write every mask as DIR/masks/<sec>_<nanosec>.png')
    parser.add_argument('--masks-topic', default='defvos/masks')
    parser.add_argument('--overlay-topic', default='defvos/overlay')
    parser.add_argument('--max-frames', type=int, default=0,
                        help='stop after this many masks (0 = never)')
    parser.add_argument('--idle-timeout', type=float, default=0.0,
                        help='stop after this many seconds without a mask (0 = never)')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the recorder until Ctrl-C, --max-frames or --idle-timeout."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(remove_ros_args(['recorder'] + argv)[1:])
    rclpy.init(args=['recorder'] + argv)
    try:
        recorder = Recorder(args.out, args.bag, args.storage, args.masks_topic,
                            args.overlay_topic, args.fps, args.save_masks)
    except (OSError, ValueError) as error:
        print(f'defvos_ros.recorder: {error}', file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        while rclpy.ok():
            rclpy.spin_once(recorder, timeout_sec=0.1)
            if args.max_frames and recorder.masks_received >= args.max_frames:
                break
            idle = time.monotonic() - recorder.last_message_time
            if args.idle_timeout and idle >= args.idle_timeout:
                break
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        written = recorder.close()
        recorder.get_logger().info(
            f'{recorder.masks_received} masks, {recorder.overlays_received} overlay frames; '
            f"video {written['video']}, bag {written['bag']}")
        recorder.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
