"""Publish a clip as a camera would: frames (rgb8, stamped now) and a first-frame seed mask.

    python -m defvos_ros.play --frames DIR_OR_VIDEO --seed PNG [--rate 30] [--loop]
        [--topic image] [--seed-topic seed_mask] [--seed-delay S] [--frame-id camera]
        [--wait-for defvos/masks] [--ros-args ...]
    python -m defvos_ros.play --bag PATH --topic NAME [--publish-topic T] [--speed 1]
        [--seed PNG] [--loop]

Frames get the node clock's time (``use_sim_time`` respected); the seed is stamped with the
first frame's stamp, ``--seed-delay`` seconds after it (a late seed, as an operator's would
be). ``--bag`` replays the Image or CompressedImage messages of one topic of a rosbag2
(sqlite3 or mcap, read with the ``rosbags`` library) with their original headers and
timing. ``--wait-for TOPIC`` plays in lockstep: once the seed is out, each frame waits for
the mask with its stamp (for offline evaluation through ROS; the node otherwise drops stale
frames when the player is faster than the model).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from defvos_ros.image_conversion import numpy_to_image
from defvos_ros.ros_helpers import spin_in_thread, stamp_to_ns

ImageMessage = Union[Image, CompressedImage]
MAX_SENT_RECORDS = 100_000
MAX_UNCLAIMED_MASKS = 10_000
FLUSH_TIMEOUT = 5.0  # s: wait for reliable subscribers' acks before exiting
BAG_IMAGE_TYPES = {'sensor_msgs/msg/Image': Image,
                   'sensor_msgs/msg/CompressedImage': CompressedImage}


def read_bag_images(bag: Union[str, Path], topic: str) -> Iterator[tuple[int, ImageMessage]]:
    """Yield (bag timestamp ns, message) for the Image/CompressedImage messages of ``topic``."""
    from rosbags.rosbag2 import Reader

    with Reader(Path(bag)) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        if not connections:
            topics = sorted({f'{c.topic} ({c.msgtype})' for c in reader.connections})
            raise ValueError(f'{bag}: no topic {topic!r}; the bag has {topics}')
        for connection in connections:
            if connection.msgtype not in BAG_IMAGE_TYPES:
                raise ValueError(f'{bag}: topic {topic!r} holds {connection.msgtype}, expected '
                                 f'one of {sorted(BAG_IMAGE_TYPES)}')
        for connection, timestamp, raw in reader.messages(connections=connections):
            yield timestamp, deserialize_message(bytes(raw), BAG_IMAGE_TYPES[connection.msgtype])


class Player(Node):
    """Publishes frames and seeds; optionally waits for each frame's mask (lockstep)."""

    def __init__(self, image_topic: str = 'image', seed_topic: str = 'seed_mask',
                 frame_id: str = 'camera', wait_for: Optional[str] = None,
                 node_name: str = 'defvos_player', **node_options) -> None:
        super().__init__(node_name, **node_options)
        self.frame_id = frame_id
        self.image_topic = image_topic
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.create_publisher(Image, image_topic, reliable)
        self.compressed_pub = None  # created on first CompressedImage (bag replay)
        self.seed_pub = self.create_publisher(Image, seed_topic, reliable)
        self._masks_seen: set[int] = set()
        self._masks_lock = threading.Condition()
        self.masks_sub = None
        if wait_for:
            self.masks_sub = self.create_subscription(Image, wait_for, self._on_mask,
                                                      QoSProfile(depth=100))
        self.frames_published = 0
        # (frame name, stamp ns) of the frames published, the last MAX_SENT_RECORDS of them
        self.sent: deque[tuple[str, int]] = deque(maxlen=MAX_SENT_RECORDS)

    # -------------------------------------------------------------------------- plumbing
    def _on_mask(self, msg: Image) -> None:
        with self._masks_lock:
            if len(self._masks_seen) >= MAX_UNCLAIMED_MASKS:  # bounded on endless loops
                self._masks_seen.clear()
            self._masks_seen.add(stamp_to_ns(msg.header.stamp))
            self._masks_lock.notify_all()

    def wait_for_mask(self, stamp: int, timeout: float = 10.0) -> bool:
        """Wait until a mask stamped ``stamp`` (ns) arrived on the wait-for topic."""
        with self._masks_lock:
            arrived = self._masks_lock.wait_for(lambda: stamp in self._masks_seen, timeout)
            self._masks_seen.discard(stamp)
            return arrived

    def wait_for_subscribers(self, timeout: float = 10.0, seed: bool = True) -> bool:
        """Wait until the image (and seed) topics have a subscriber and masks a publisher."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = self.image_pub.get_subscription_count() > 0
            ready = ready and (not seed or self.seed_pub.get_subscription_count() > 0)
            if self.masks_sub is not None:
                ready = ready and self.count_publishers(self.masks_sub.topic_name) > 0
            if ready:
                return True
            time.sleep(0.02)
        return False

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Wait until every subscriber acknowledged what was published (reliable QoS).

        Call before destroying the node: samples still in flight when a reliable writer is
        deleted are lost, so a player that exits right after its last frame can drop it.
        """
        deadline = time.monotonic() + timeout
        publishers = [self.image_pub, self.seed_pub, self.compressed_pub]
        acked = True
        for publisher in (pub for pub in publishers if pub is not None):
            left = max(0.0, deadline - time.monotonic())
            acked = publisher.wait_for_all_acked(Duration(seconds=left)) and acked
        return acked

    def header(self, stamp: Optional[Time] = None) -> Header:
        """Return a header with ``stamp`` (default: now) and the player's frame_id."""
        return Header(stamp=stamp or self.get_clock().now().to_msg(), frame_id=self.frame_id)

    # -------------------------------------------------------------------------- publishing
    def publish_frame(self, rgb: np.ndarray, header: Optional[Header] = None,
                      name: str = '') -> Header:
        """Publish an (H, W, 3) uint8 RGB frame as rgb8; returns its header."""
        header = header or self.header()
        self.image_pub.publish(numpy_to_image(rgb, 'rgb8', header))
        self._sent(name, header)
        return header

    def publish_message(self, msg: ImageMessage, name: str = '') -> Header:
        """Publish an Image or CompressedImage as it is (bag replay)."""
        if isinstance(msg, CompressedImage):
            if self.compressed_pub is None:
                self.compressed_pub = self.create_publisher(
                    CompressedImage, self.image_topic,
                    QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
            self.compressed_pub.publish(msg)
        else:
            self.image_pub.publish(msg)
        self._sent(name, msg.header)
        return msg.header

    def _sent(self, name: str, header: Header) -> None:
        self.frames_published += 1
        self.sent.append((name, stamp_to_ns(header.stamp)))

    def publish_seed(self, labels: np.ndarray, header: Header) -> None:
        """Publish an (H, W) label map as a mono8 seed with its frame's header."""
        self.seed_pub.publish(numpy_to_image(np.asarray(labels, dtype=np.uint8), 'mono8',
                                             header))

    # --------------------------------------------------------------------------- playback
    def play(self, frames: Iterable[tuple], seed: Optional[np.ndarray] = None,
             rate: float = 30.0, seed_delay: float = 0.0, wait_timeout: float = 10.0) -> int:
        """Publish ``frames``, the seed with the first frame's header; return masks missed.

        Items are (name, rgb array or Image/CompressedImage) or (name, message, bag
        timestamp ns). ``rate`` paces arrays in frames per second; items with a timestamp
        keep their recorded spacing with ``rate`` as the speed factor. 0 = no pauses. The
        return value counts the masks that did not arrive in lockstep mode.
        """
        lockstep = self.masks_sub is not None
        seed_header: Optional[Header] = None
        seed_sent = seed is None
        missing = 0
        start = time.monotonic()
        first_time = 0.0
        first_timestamp: Optional[int] = None
        for index, (name, frame, *timestamp) in enumerate(frames):
            if timestamp and rate > 0:
                first_timestamp = timestamp[0] if first_timestamp is None else first_timestamp
                _sleep_until(start + (timestamp[0] - first_timestamp) * 1e-9 / rate)
            elif rate > 0:
                _sleep_until(start + index / rate)
            if index and not seed_sent and time.monotonic() - first_time >= seed_delay:
                # A late seed goes out before this frame so that, in lockstep, the node has
                # the objects before the frame arrives.
                self.publish_seed(seed, seed_header)
                seed_sent = True
                if lockstep:
                    missing += not self.wait_for_mask(stamp_to_ns(seed_header.stamp),
                                                      wait_timeout)
            if isinstance(frame, (Image, CompressedImage)):
                header = self.publish_message(frame, name)
            else:
                header = self.publish_frame(frame, name=name)
            if index == 0:
                first_time, seed_header = time.monotonic(), header
                if not seed_sent and seed_delay <= 0:
                    self.publish_seed(seed, header)
                    seed_sent = True
            if lockstep and seed_sent:
                missing += not self.wait_for_mask(stamp_to_ns(header.stamp), wait_timeout)
        if not seed_sent and seed_header is not None:  # clip shorter than the seed delay
            _sleep_until(first_time + seed_delay)
            self.publish_seed(seed, seed_header)
            if lockstep:
                missing += not self.wait_for_mask(stamp_to_ns(seed_header.stamp), wait_timeout)
        return missing


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _load_frames(path: str) -> Iterator[tuple[str, np.ndarray]]:
    from defvos_core.data.video_io import iter_video_frames

    return iter_video_frames(path)


def build_parser() -> argparse.ArgumentParser:
    """Return the command line of ``python -m defvos_ros.play``."""
    parser = argparse.ArgumentParser(
        prog='python -m defvos_ros.play',
        description='Publish a folder of frames, a video or a rosbag2 image topic as a camera '
                    'would, plus a first-frame seed mask. ROS arguments go after --ros-args.')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--frames', help='folder of .jpg/.png frames or a video file')
    source.add_argument('--bag', help='rosbag2 folder (sqlite3 or mcap) to replay --topic of')
    parser.add_argument('--seed', help='label-map PNG of the first frame (0 = background)')
    parser.add_argument('--rate', type=float, default=30.0,
                        help='frames per second for --frames (0 = as fast as possible)')
    parser.add_argument('--speed', type=float, default=1.0,
                        help='speed factor of the recorded timing for --bag (0 = no pauses)')
    parser.add_argument('--loop', action='store_true', help='play again and again')
    parser.add_argument('--topic', default='image',
                        help='image topic to publish (--frames) or to read from the bag')
    parser.add_argument('--publish-topic',
                        help='topic to publish bag images on (default: --topic)')
    parser.add_argument('--seed-topic', default='seed_mask', help='seed mask topic')
    parser.add_argument('--seed-delay', type=float, default=0.0,
                        help='seconds between the first frame and its seed')
    parser.add_argument('--frame-id', default='camera', help='header.frame_id of frames')
    parser.add_argument('--wait-for', metavar='TOPIC',
                        help='lockstep: wait for the mask of each frame on TOPIC '
                             '(e.g. /defvos/masks) before the next')
    parser.add_argument('--wait-timeout', type=float, default=10.0,
                        help='seconds to wait for each mask in lockstep mode')
    parser.add_argument('--wait-subscribers', type=float, default=10.0,
                        help='seconds to wait for a subscriber before starting')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the player (``defvos-play`` / ``python -m defvos_ros.play``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(remove_ros_args(['play'] + argv)[1:])
    seed = None
    try:
        if args.seed:
            from defvos_core.data.masks import read_label_map

            seed = read_label_map(args.seed)
        if args.frames and not Path(args.frames).exists():
            raise FileNotFoundError(f'--frames {args.frames}: no such folder or video')
        if args.bag and not Path(args.bag).exists():
            raise FileNotFoundError(f'--bag {args.bag}: no such rosbag2')
    except (OSError, ValueError) as error:
        print(f'defvos_ros.play: {error}', file=sys.stderr)
        return 2
    rclpy.init(args=['play'] + argv)
    publish_topic = args.publish_topic or args.topic
    player = Player(publish_topic if args.bag else args.topic, args.seed_topic, args.frame_id,
                    args.wait_for)
    executor = SingleThreadedExecutor()
    executor.add_node(player)
    thread = spin_in_thread(executor)
    log = player.get_logger()
    try:
        if not player.wait_for_subscribers(args.wait_subscribers, seed=seed is not None):
            log.warning(f"no subscriber on '{player.image_pub.topic_name}' after "
                        f'{args.wait_subscribers} s; publishing anyway')
        first = True
        while first or args.loop:
            if args.bag:
                frames = ((str(i), msg, timestamp) for i, (timestamp, msg)
                          in enumerate(read_bag_images(args.bag, args.topic)))
                missing = player.play(frames, seed if first else None, args.speed,
                                      wait_timeout=args.wait_timeout)
            else:
                missing = player.play(_load_frames(args.frames), seed if first else None,
                                      args.rate, args.seed_delay,
                                      wait_timeout=args.wait_timeout)
            if missing:
                log.warning(f'{missing} mask(s) did not arrive within {args.wait_timeout} s')
            first = False
        log.info(f'published {player.frames_published} frames')
        if not player.flush():
            log.warning(f'not every subscriber acknowledged the last frames within '
                        f'{FLUSH_TIMEOUT} s')
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (OSError, ValueError) as error:
        print(f'defvos_ros.play: {error}', file=sys.stderr)
        return 2
    finally:
        executor.shutdown()
        player.destroy_node()
        rclpy.try_shutdown()
        thread.join(timeout=5.0)
    return 0


if __name__ == '__main__':
    sys.exit(main())
