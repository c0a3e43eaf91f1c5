"""The defvos rclpy node: camera frames in, per-object label maps out, in real time.

Threads. Subscription and service callbacks only store messages (O(1)); one worker thread
converts frames and runs the tracker. The worker always takes the newest frame: a frame
replaced before the worker got to it is dropped and counted, so latency never accumulates
when the camera is faster than the model. The tracker is touched only under one lock
(worker, ``~/reset``, ``~/remove_object``).

Seeds. A seed mask names its frame by ``header.stamp``; the node keeps the last
``frame_buffer_size`` frame messages (FrameRingBuffer) and pairs the seed with the nearest
frame within ``seed_tolerance_sec``. The seed's objects are added at THAT frame through
``Tracker.add_objects(frame, seed)``: the tracker's memory then continues from that frame,
and the next frames are tracked from it. A seed stamped after every buffered frame waits up
to ``seed_wait_sec`` for its frame; any other seed without a frame is rejected.

Names (all remappable): subscribes ``image`` (or ``<image>/compressed``) and ``seed_mask``;
publishes ``defvos/masks`` and ``defvos/objects`` (relative: ``/defvos/...`` in the root
namespace, ``/<ns>/defvos/...`` under a namespace) and ``~/overlay``; ``~/reset`` service
and ``~/remove_object`` topic. See README.md, "ROS 2 node".
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Union

import numpy as np
import rclpy
import rclpy.logging
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float32MultiArray, MultiArrayDimension, UInt8
from std_srvs.srv import Trigger

from defvos_core.data.masks import overlay
from defvos_core.errors import FrameError, SeedError
from defvos_core.inference.seeds import check_seed
from defvos_ros.image_conversion import (ImageConversionError, compressed_to_rgb,
                                         image_to_labels, image_to_rgb, numpy_to_image)
from defvos_ros.parameters import NodeSettings, declare_parameters, validate_update
from defvos_ros.ros_helpers import format_stamp, stamp_to_ns
from defvos_ros.seed_buffer import BufferedFrame, FrameRingBuffer
from defvos_ros.stats import PipelineStats

if TYPE_CHECKING:
    from defvos_core.inference.tracker import Tracker, TrackResult

# OpenMP threads that wait for work sleep instead of spinning. A robot's CPU is shared with
# other nodes: with spinning threads, inference on a busy 2-core CPU was ~5x slower
# (1.1 s instead of 0.17 s per 240p frame). Set before torch (imported when the tracker is
# built) loads its OpenMP runtime; export OMP_WAIT_POLICY=ACTIVE to opt out.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

NODE_NAME = 'defvos'
MASKS_TOPIC = 'defvos/masks'  # relative on purpose: /defvos/masks, or /<ns>/defvos/masks
OBJECTS_TOPIC = 'defvos/objects'
OVERLAY_TOPIC = '~/overlay'
RESET_SERVICE = '~/reset'
REMOVE_TOPIC = '~/remove_object'
OBJECT_FIELDS = ('id', 'present', 'confidence', 'area_fraction')
MAX_PENDING_SEEDS = 16
_WORKER_POLL_S = 0.05

Frame = Union[Image, CompressedImage]


class StartupError(RuntimeError):
    """The node cannot start (bad parameter, missing weights, backend unavailable)."""


def objects_message(result: TrackResult, pixels: int) -> Float32MultiArray:
    """Per-object rows [id, present, confidence, area_fraction] as a Float32MultiArray.

    dim[0] 'objects' (one row per tracked object, ascending id), dim[1] the field names.
    present is 1.0 when the object has at least one pixel in the mask, else 0.0;
    confidence is the mean probability over its pixels (0 when absent); area_fraction is
    its pixel count over the image's.
    """
    rows = [[float(object_id), 1.0 if result.area[object_id] > 0 else 0.0,
             float(result.confidence[object_id]), result.area[object_id] / pixels]
            for object_id in result.object_ids]
    msg = Float32MultiArray()
    width = len(OBJECT_FIELDS)
    msg.layout.dim = [
        MultiArrayDimension(label='objects', size=len(rows), stride=len(rows) * width),
        MultiArrayDimension(label=','.join(OBJECT_FIELDS), size=width, stride=width),
    ]
    msg.data = [value for row in rows for value in row]
    return msg


class InputWarnings:
    """Throttled warnings about bad input: one throttle per kind, plus counters.

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

    def warn(self, kind: str, message: str) -> None:
        """Count a rejected input of ``kind`` and log ``message`` (throttled per kind)."""
        with self._lock:
            self.counts[kind] += 1
            logger = self._loggers.get(kind)
            if logger is None:
                logger = self._loggers[kind] = rclpy.logging.get_logger(self._logger_name)
        self._stats.input_rejected()
        logger.warning(message, throttle_duration_sec=self._throttle_sec)


@dataclass(eq=False)
class _PendingSeed:
    msg: Image
    stamp_ns: int
    received_s: float  # time.monotonic()
    generation: int  # reset counter when it arrived


class DefvosNode(Node):
    """Tracks the objects of seed masks in a camera stream and publishes label maps."""

    def __init__(self, node_name: str = NODE_NAME, **node_options) -> None:
        super().__init__(node_name, **node_options)
        self._worker: Optional[threading.Thread] = None
        try:
            self.settings: NodeSettings = declare_parameters(self)
        except Exception as error:  # rclpy ParameterException or ValueError
            self.destroy_node()
            raise StartupError(f'invalid parameter: {error}') from error
        try:
            self.tracker = self._load_tracker()
        except StartupError:
            self.destroy_node()
            raise
        settings = self.settings
        self.stats = PipelineStats()
        self.warnings = InputWarnings(self.get_logger().name, settings.warning_throttle_sec,
                                      self.stats)
        self.overlays_published = 0
        self._frames: FrameRingBuffer[Frame] = FrameRingBuffer(settings.frame_buffer_size)
        self._tracker_lock = threading.Lock()
        self._wake = threading.Condition()
        self._latest: Optional[BufferedFrame[Frame]] = None
        self._pending_seeds: deque[_PendingSeed] = deque()
        self._seed_arrived = False
        self._stopping = False
        self._generation = 0  # incremented by ~/reset
        self._last_published_ns: Optional[int] = None

        masks_qos = settings.masks_qos()
        self.masks_pub = self.create_publisher(Image, MASKS_TOPIC, masks_qos)
        self.objects_pub = self.create_publisher(Float32MultiArray, OBJECTS_TOPIC, masks_qos)
        self.overlay_pub = self.create_publisher(Image, OVERLAY_TOPIC, masks_qos)
        if settings.use_compressed:
            # image_transport convention: '<resolved image topic>/compressed', so that
            # remapping 'image' also moves the compressed subscription.
            self.image_topic = self.resolve_topic_name('image') + '/compressed'
            self.create_subscription(CompressedImage, self.image_topic, self._on_image,
                                     settings.image_qos())
        else:
            self.image_topic = self.resolve_topic_name('image')
            self.create_subscription(Image, 'image', self._on_image, settings.image_qos())
        command_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.seed_topic = self.resolve_topic_name('seed_mask')
        self.create_subscription(Image, 'seed_mask', self._on_seed, command_qos)
        self.create_subscription(UInt8, REMOVE_TOPIC, self._on_remove, command_qos)
        self.create_service(Trigger, RESET_SERVICE, self._on_reset)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if settings.summary_period_sec > 0:
            self.create_timer(settings.summary_period_sec, self._log_summary,
                              clock=Clock(clock_type=ClockType.STEADY_TIME))

        self._worker = threading.Thread(target=self._work, name='defvos-inference',
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(
            f'ready: {settings.tracker.backend} on {settings.tracker.device}, size '
            f'{settings.tracker.size or "input"}'
            f", frames from '{self.image_topic}' ({settings.image_qos_reliability}, depth "
            f"{settings.image_qos_depth}), seeds from '{self.seed_topic}', masks on "
            f"'{self.masks_pub.topic_name}' ({settings.masks_qos_reliability})")

    # ---------------------------------------------------------------------------- start-up
    def _load_tracker(self) -> Tracker:
        import torch

        from defvos_core.build import build_tracker

        settings = self.settings
        if settings.num_threads:
            torch.set_num_threads(settings.num_threads)
        try:
            return build_tracker(settings.weights or None, settings.tracker)
        except FileNotFoundError as error:
            raise StartupError(f"{error} (parameter 'weights')") from error
        except Exception as error:  # torch/onnxruntime raise many types; report them all
            raise StartupError(
                f"cannot start the '{settings.tracker.backend}' tracker on device "
                f"'{settings.tracker.device}' with weights "
                f"{settings.weights or '(shipped student)'}: {type(error).__name__}: "
                f'{error}') from error

    def destroy_node(self) -> None:
        """Stop the inference thread, then destroy the node."""
        worker = getattr(self, '_worker', None)
        if worker is not None and worker.is_alive():
            with self._wake:
                self._stopping = True
                self._wake.notify_all()
            worker.join(timeout=10.0)
        super().destroy_node()

    # --------------------------------------------------------------------------- callbacks
    def _on_image(self, msg: Frame) -> None:
        frame = BufferedFrame(stamp_to_ns(msg.header.stamp), msg, time.monotonic_ns())
        self.stats.frame_received()
        self._frames.push(frame)
        with self._wake:
            if self._latest is not None:
                self.stats.frame_dropped()
            self._latest = frame
            self._wake.notify()

    def _on_seed(self, msg: Image) -> None:
        with self._wake:
            if len(self._pending_seeds) >= MAX_PENDING_SEEDS:
                dropped = self._pending_seeds.popleft()
                self.warnings.warn(
                    'seed_overflow', f'{MAX_PENDING_SEEDS} seed masks waiting for their '
                    f'frames: dropped the oldest (stamp {format_stamp(dropped.stamp_ns)})')
            self._pending_seeds.append(_PendingSeed(msg, stamp_to_ns(msg.header.stamp),
                                                    time.monotonic(), self._generation))
            self._seed_arrived = True
            self._wake.notify()

    def _on_remove(self, msg: UInt8) -> None:
        object_id = int(msg.data)
        with self._tracker_lock:
            tracked = self.tracker.object_ids
            try:
                self.tracker.remove_object(object_id)
            except KeyError:
                self.warnings.warn('remove_unknown', f"'{REMOVE_TOPIC}': object {object_id} "
                                   f'is not tracked (tracked: {tracked})')
                return
            remaining = self.tracker.object_ids
        self.get_logger().info(f'removed object {object_id}; tracking {remaining}')

    def _on_reset(self, request: Trigger.Request,
                  response: Trigger.Response) -> Trigger.Response:
        with self._tracker_lock:
            cleared = self.tracker.object_ids
            self.tracker.reset()
            self._generation += 1
            self._last_published_ns = None
        with self._wake:
            self._pending_seeds.clear()
        response.success = True
        response.message = f'cleared {len(cleared)} object(s) {cleared} and the memory'
        self.get_logger().info(f'reset: {response.message}')
        return response

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        reason = validate_update(parameters)
        if reason is not None:
            return SetParametersResult(successful=False, reason=reason)
        for parameter in parameters:
            self.settings.set_parameter(parameter.name, parameter.value)
        return SetParametersResult(successful=True)

    def _log_summary(self) -> None:
        summary = self.stats.summary(objects=len(self.tracker.object_ids))
        self.get_logger().info(summary.format())

    # ------------------------------------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(
                    lambda: self._stopping or self._latest is not None or self._seed_arrived,
                    timeout=_WORKER_POLL_S)
                if self._stopping:
                    return
                self._seed_arrived = False
            try:
                self._process_seeds()
                frame = self._take_latest()
                if frame is not None:
                    self._process_frame(frame)
            except Exception as error:  # never let the worker die on one bad frame
                self.get_logger().error(f'unexpected error while tracking: '
                                        f'{type(error).__name__}: {error}',
                                        throttle_duration_sec=self.settings.warning_throttle_sec)

    def _take_latest(self, stamp_ns: Optional[int] = None) -> Optional[BufferedFrame[Frame]]:
        """Take the newest frame (only if stamped ``stamp_ns`` when given)."""
        with self._wake:
            frame = self._latest
            if frame is not None and (stamp_ns is None or frame.stamp_ns == stamp_ns):
                self._latest = None
                return frame
        return None

    def _convert(self, frame: BufferedFrame[Frame]) -> Optional[np.ndarray]:
        """Return the frame as (H, W, 3) uint8 RGB, or None after a specific warning."""
        msg = frame.item
        try:
            if isinstance(msg, CompressedImage):
                return compressed_to_rgb(msg)
            return image_to_rgb(msg)
        except ImageConversionError as error:
            self.warnings.warn(error.kind, f"frame on '{self.image_topic}' (stamp "
                               f'{format_stamp(frame.stamp_ns)}) dropped: {error}')
            return None

    def _process_frame(self, frame: BufferedFrame[Frame]) -> None:
        rgb = self._convert(frame)
        if rgb is None:
            return
        with self._tracker_lock:
            if not self.tracker.object_ids:
                return  # nothing is published while no object is tracked
            try:
                result = self.tracker.step(rgb)
            except FrameError as error:
                self.warnings.warn(error.kind, f"frame on '{self.image_topic}' dropped: "
                                   f"{error} (call '{RESET_SERVICE}', then send a seed)")
                return
            self._publish(result, frame, rgb)
        self.stats.frame_processed((time.monotonic_ns() - frame.received_ns) * 1e-9)

    def _process_seeds(self) -> None:
        with self._wake:
            pending = list(self._pending_seeds)
        tolerance_ns = int(round(self.settings.seed_tolerance_sec * 1e9))
        for seed in pending:
            frame = self._frames.match(seed.stamp_ns, tolerance_ns)
            if frame is None and self._seed_may_wait(seed, tolerance_ns):
                continue
            with self._wake:
                if seed not in self._pending_seeds:
                    continue  # cleared by ~/reset meanwhile
                self._pending_seeds.remove(seed)
            if frame is None:
                self._reject_unpaired(seed)
            else:
                self._apply_seed(seed, frame)

    def _seed_may_wait(self, seed: _PendingSeed, tolerance_ns: int) -> bool:
        """Whether a seed stamped after every buffered frame may still wait for its frame."""
        span = self._frames.span()
        ahead = span is None or seed.stamp_ns > span[1] + tolerance_ns
        return ahead and time.monotonic() - seed.received_s < self.settings.seed_wait_sec

    def _reject_unpaired(self, seed: _PendingSeed) -> None:
        span = self._frames.span()
        held = ('no frame buffered yet' if span is None else
                f'buffered frames span {format_stamp(span[0])}..{format_stamp(span[1])}')
        self.warnings.warn(
            'seed_no_frame', f"seed_mask on '{self.seed_topic}' stamped "
            f'{format_stamp(seed.stamp_ns)} rejected: no frame on \'{self.image_topic}\' '
            f'within +-{self.settings.seed_tolerance_sec} s ({held}, last '
            f'{self._frames.capacity} kept); stamp the seed with its frame\'s header.stamp')

    def _apply_seed(self, seed: _PendingSeed, frame: BufferedFrame[Frame]) -> None:
        where = f"seed_mask on '{self.seed_topic}' stamped {format_stamp(seed.stamp_ns)}"
        try:
            labels = image_to_labels(seed.msg)  # (H, W) int32
        except ImageConversionError as error:
            self.warnings.warn('seed_invalid', f'{where} rejected: {error}')
            return
        rgb = self._convert(frame)
        if rgb is None:
            self.warnings.warn('seed_frame_invalid', f'{where} rejected: its frame could not '
                               'be converted')
            return
        try:
            labels, seed_ids = check_seed(labels, rgb.shape)
        except SeedError as error:
            self.warnings.warn(error.kind, f'{where} rejected: {error}')
            return
        with self._tracker_lock:
            if seed.generation != self._generation:
                return  # arrived before a ~/reset
            tracked = self.tracker.object_ids
            total = sorted(set(tracked) | set(seed_ids))
            if len(total) > self.settings.max_objects:
                self.warnings.warn(
                    'seed_too_many', f'{where} rejected: it would make {len(total)} tracked '
                    f'objects (seed {seed_ids}, tracked {tracked}) but max_objects is '
                    f'{self.settings.max_objects}')
                return
            try:
                result = self.tracker.add_objects(rgb, labels)
            except (SeedError, FrameError) as error:
                self.warnings.warn(error.kind, f'{where} rejected: {error}')
                return
            published = self._publish(result, frame, rgb, only_if_newest=True)
        self._take_latest(frame.stamp_ns)  # that frame is done; do not step it twice
        note = '' if published else ' (older than the last mask: not published)'
        self.get_logger().info(f'seed at frame {format_stamp(frame.stamp_ns)}: added/replaced '
                               f'{seed_ids}, tracking {result.object_ids}{note}')

    def _publish(self, result: TrackResult, frame: BufferedFrame[Frame], rgb: np.ndarray,
                 only_if_newest: bool = False) -> bool:
        """Publish masks, objects and (when wanted) the overlay with the frame's header."""
        if not result.object_ids:
            return False
        if (only_if_newest and self._last_published_ns is not None
                and frame.stamp_ns < self._last_published_ns):
            return False  # keep the mask stream in stamp order for stamp-fusing consumers
        header = frame.item.header
        self.masks_pub.publish(numpy_to_image(result.labels, 'mono8', header))
        self.objects_pub.publish(objects_message(result, result.labels.size))
        if self.settings.overlay and self.overlay_pub.get_subscription_count() > 0:
            self.overlay_pub.publish(numpy_to_image(overlay(rgb, result.labels), 'rgb8',
                                                    header))
            self.overlays_published += 1
        self._last_published_ns = frame.stamp_ns
        return True


def main(args: Optional[list[str]] = None) -> int:
    """Run the node (``ros2 run defvos_ros segmenter`` / ``python -m defvos_ros``)."""
    rclpy.init(args=args)
    try:
        node = DefvosNode()
    except StartupError as error:
        rclpy.logging.get_logger(NODE_NAME).fatal(f'start-up failed: {error}')
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
