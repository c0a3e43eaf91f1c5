"""The defvos rclpy node: camera frames in, per-object label maps out, in real time.

A managed (lifecycle) node. ``configure`` builds the tracker (loads the weights, prepares
the ONNX graphs of ``expected_image_sizes``) and starts the inference worker; ``activate``
starts processing; ``deactivate`` pauses (frames are counted as dropped, ``inactive``);
``cleanup`` frees the model. With ``autostart`` (default) the node configures and activates
itself, so ``ros2 launch``, ``ros2 run`` and ``python -m defvos_ros`` need no manager.

The node only converts messages and schedules work: callbacks hand messages to the
`TrackingWorker` (defvos_ros/worker.py), which owns the tracker on its own thread; services
await the worker's answer without blocking the executor. Names (all remappable): subscribes
``image`` (or ``<image>/compressed``) and ``seed_mask``; publishes ``defvos/masks``,
``defvos/objects`` (relative: ``/defvos/...`` in the root namespace) and ``~/overlay``;
with a ``depth_topic``, also ``defvos/objects_3d``, ``~/objects_cloud`` and
``~/objects_markers`` (defvos_ros/objects_3d.py);
services ``~/add_objects``, ``~/remove_objects``, ``~/reset``; ``/diagnostics`` at 1 Hz.
See README.md, "ROS 2 node".
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from concurrent.futures import Future as ConcurrentFuture
from typing import TYPE_CHECKING, Any, Optional, Union

import rclpy
import rclpy.logging
from defvos_interfaces.msg import Object3DArray, TrackedObjectArray
from defvos_interfaces.srv import AddObjects, RemoveObjects
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from defvos_core.errors import InputError
from defvos_core.overlay import overlay
from defvos_ros.diagnostics import node_status
from defvos_ros.image_conversion import (compressed_to_rgb, image_to_labels, image_to_rgb,
                                         numpy_to_image)
from defvos_ros.input_warnings import InputWarnings
from defvos_ros.messages import parse_prompts, tracked_objects_message
from defvos_ros.messages_3d import cloud_message, markers_message, objects_3d_message
from defvos_ros.objects_3d import Objects3DStage
from defvos_ros.parameters import NodeSettings, declare_parameters, validate_update
from defvos_ros.ros_helpers import stamp_to_ns
from defvos_ros.seed_buffer import BufferedFrame, FrameRingBuffer
from defvos_ros.stats import PeriodReader, PipelineStats
from defvos_ros.worker import (FrameOutput, ObjectRequest, TrackingWorker, WorkerLimits,
                               WorkerSnapshot)

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
OBJECTS_3D_TOPIC = 'defvos/objects_3d'  # only with a depth_topic, as the two below
CLOUD_TOPIC = '~/objects_cloud'
MARKERS_TOPIC = '~/objects_markers'
DIAGNOSTICS_TOPIC = '/diagnostics'
ADD_SERVICE = '~/add_objects'
REMOVE_SERVICE = '~/remove_objects'
RESET_SERVICE = '~/reset'
DIAGNOSTICS_PERIOD_S = 1.0
STOP_TIMEOUT_S = 1.0  # the worker finishes its current frame, or is abandoned (daemon)

Frame = Union[Image, CompressedImage]


class StartupError(RuntimeError):
    """The node cannot start (bad parameter, missing weights, backend unavailable)."""


class DefvosNode(LifecycleNode):
    """Tracks prompted objects in a camera stream and publishes label maps and object lists."""

    def __init__(self, node_name: str = NODE_NAME, **node_options) -> None:
        super().__init__(node_name, **node_options)
        self.worker: Optional[TrackingWorker] = None
        try:
            self.settings: NodeSettings = declare_parameters(self)
        except Exception as error:  # rclpy ParameterException or ValueError
            self.destroy_node()
            raise StartupError(f'invalid parameter: {error}') from error
        settings = self.settings
        self.state = 'unconfigured'
        self.stats = PipelineStats()
        self.warnings = InputWarnings(self.get_logger().name, settings.warning_throttle_sec,
                                      self.stats)
        self.limits = WorkerLimits(settings.max_objects, settings.seed_tolerance_sec,
                                   settings.seed_wait_sec)
        self.overlays_published = 0
        self.worker_error: Optional[BaseException] = None
        self.failed = threading.Event()  # the worker died: main() exits non-zero
        self._frames: FrameRingBuffer[Frame] = FrameRingBuffer(settings.frame_buffer_size)
        self._summary_reader = PeriodReader(self.stats)
        self._diagnostics_reader = PeriodReader(self.stats)

        masks_qos = settings.masks_qos()
        self.masks_pub = self.create_lifecycle_publisher(Image, MASKS_TOPIC, masks_qos)
        self.objects_pub = self.create_lifecycle_publisher(TrackedObjectArray, OBJECTS_TOPIC,
                                                           masks_qos)
        self.overlay_pub = self.create_lifecycle_publisher(Image, OVERLAY_TOPIC, masks_qos)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.objects_3d: Optional[Objects3DStage] = None
        if settings.depth_topic:
            self._start_objects_3d()
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
        # The object services await the worker; a pending coroutine holds its callback group,
        # so they get their own (reentrant) group and never hold up the image callbacks.
        services = ReentrantCallbackGroup()
        self.create_service(AddObjects, ADD_SERVICE, self._on_add_objects,
                            callback_group=services)
        self.create_service(RemoveObjects, REMOVE_SERVICE, self._on_remove_objects,
                            callback_group=services)
        self.create_service(Trigger, RESET_SERVICE, self._on_reset, callback_group=services)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics, clock=steady)
        if settings.summary_period_sec > 0:
            self.create_timer(settings.summary_period_sec, self._log_summary, clock=steady)
        if settings.autostart:
            self._autostart()

    def _start_objects_3d(self) -> None:
        """Subscribe the depth image and CameraInfo; create the 3D publishers."""
        settings = self.settings
        self.objects_3d = Objects3DStage(settings.objects_3d_config(),
                                         settings.depth_tolerance_sec,
                                         settings.depth_buffer_size, self.warnings.warn,
                                         settings.depth_wait_sec)
        masks_qos = settings.masks_qos()
        self.objects_3d_pub = self.create_lifecycle_publisher(Object3DArray, OBJECTS_3D_TOPIC,
                                                              masks_qos)
        self.cloud_pub = self.create_lifecycle_publisher(PointCloud2, CLOUD_TOPIC, masks_qos)
        self.markers_pub = self.create_lifecycle_publisher(MarkerArray, MARKERS_TOPIC,
                                                           masks_qos)
        self.depth_topic = self.resolve_topic_name(settings.depth_topic)
        self.camera_info_topic = self.resolve_topic_name(
            settings.camera_info_topic or self.depth_topic.rsplit('/', 1)[0] + '/camera_info')
        self.create_subscription(Image, self.depth_topic, self.objects_3d.add_depth,
                                 settings.image_qos())
        self.create_subscription(CameraInfo, self.camera_info_topic,
                                 self.objects_3d.set_camera_info, settings.image_qos())

    def _autostart(self) -> None:
        """Configure and activate now; StartupError (node destroyed) when either fails."""
        for name, transition in (('configure', self.trigger_configure),
                                 ('activate', self.trigger_activate)):
            if transition() != TransitionCallbackReturn.SUCCESS:
                reason = getattr(self, '_transition_error', '') or f'{name} failed'
                self.destroy_node()
                raise StartupError(reason)

    # -------------------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Build the tracker and start the worker (FAILURE, with a log line, on any error)."""
        self._transition_error = ''
        try:
            tracker = self._build_tracker()
        except StartupError as error:
            self._transition_error = str(error)
            self.get_logger().error(f'configure failed: {error}')
            return TransitionCallbackReturn.FAILURE
        self.tracker = tracker
        self.worker = TrackingWorker(
            tracker, self._convert, self._frames, self.stats, self.limits,
            publish=self._publish, warn=self.warnings.warn, log=self._log,
            on_failure=self._on_worker_failure)
        self.worker.start()
        self.state = 'inactive'
        settings = self.settings
        self.get_logger().info(
            f'configured: {settings.tracker.backend} on {settings.tracker.device}, size '
            f'{settings.tracker.size or "input"}, frames from \'{self.image_topic}\' '
            f'({settings.image_qos_reliability}, depth {settings.image_qos_depth}), seeds '
            f"from '{self.seed_topic}', masks on '{self.masks_pub.topic_name}' "
            f'({settings.masks_qos_reliability})')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start processing frames."""
        result = super().on_activate(state)
        if result == TransitionCallbackReturn.SUCCESS:
            self.state = 'active'
            self.get_logger().info('active: processing frames')
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Pause: frames are counted as dropped (inactive); objects and memory are kept."""
        self.state = 'inactive'
        self.get_logger().info('inactive: frames are dropped until activated')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the worker and free the model."""
        self._release()
        self.state = 'unconfigured'
        self.get_logger().info('cleaned up: model freed')
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the worker and free the model."""
        self._release()
        self.state = 'finalized'
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free what a failed transition left; the node returns to unconfigured."""
        self._release()
        self.state = 'unconfigured'
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        worker, self.worker = getattr(self, 'worker', None), None
        if worker is not None and not worker.stop(STOP_TIMEOUT_S):
            self.get_logger().warning('the inference worker is still busy; abandoned')
        self.tracker = None
        frames = getattr(self, '_frames', None)
        if frames is not None:
            frames.clear()
        if getattr(self, 'objects_3d', None) is not None:
            self.objects_3d.clear()

    def _build_tracker(self) -> Tracker:
        import torch

        from defvos_core.build import build_tracker

        settings = self.settings
        if settings.num_threads:
            torch.set_num_threads(settings.num_threads)
        try:
            tracker = build_tracker(settings.weights or None, settings.tracker)
        except FileNotFoundError as error:
            raise StartupError(f"{error} (parameter 'weights')") from error
        except Exception as error:  # torch/onnxruntime raise many types; report them all
            raise StartupError(
                f"cannot start the '{settings.tracker.backend}' tracker on device "
                f"'{settings.tracker.device}' with weights "
                f"{settings.weights or '(shipped student)'}: {type(error).__name__}: "
                f'{error}') from error
        for height, width in settings.image_sizes():
            try:
                tracker.backend.prepare(height, width)
            except Exception as error:
                raise StartupError(f'cannot prepare the graphs for {height}x{width} '
                                   f"(parameter 'expected_image_sizes'): {error}") from error
        return tracker

    def destroy_node(self) -> None:
        """Stop the inference thread, then destroy the node."""
        self._release()
        super().destroy_node()

    # --------------------------------------------------------------------------- callbacks
    def _on_image(self, msg: Frame) -> None:
        self.stats.frame_received()
        frame = BufferedFrame(stamp_to_ns(msg.header.stamp), msg, time.monotonic_ns())
        worker = self.worker
        if self.state != 'active' or worker is None:
            self.stats.frame_dropped('inactive')
            return
        worker.submit_frame(frame)

    def _on_seed(self, msg: Image) -> None:
        worker = self.worker
        where = f"seed_mask on '{self.seed_topic}'"
        if worker is None:
            self.warnings.warn('inactive', f'{where} rejected: the node is not configured')
            return
        worker.submit_objects(ObjectRequest(stamp_to_ns(msg.header.stamp), where,
                                            load_label_map=lambda: image_to_labels(msg)))

    async def _on_add_objects(self, request: AddObjects.Request,
                              response: AddObjects.Response) -> AddObjects.Response:
        response.success = False
        try:
            prompts = parse_prompts(list(request.objects))
        except InputError as error:
            self.warnings.warn(error.kind, f"'{ADD_SERVICE}' rejected: {error}")
            response.message = str(error)
            return response
        worker = self.worker
        if worker is None:
            response.message = 'the node is not configured'
            return response
        pending = worker.submit_objects(ObjectRequest(
            stamp_to_ns(request.header.stamp), f"'{ADD_SERVICE}' request", masks=prompts.masks,
            boxes=prompts.boxes, points=prompts.points))
        try:
            result = await self._answer(pending)
        except Exception as error:  # InputError (already logged by the worker) or a failure
            response.message = str(error)
            return response
        response.success = True
        response.ids = list(result.values)
        response.mask_values = [int(result.values[i]) for i in response.ids]
        response.message = f'tracking {result.tracked}'
        return response

    async def _on_remove_objects(self, request: RemoveObjects.Request,
                                 response: RemoveObjects.Response) -> RemoveObjects.Response:
        worker = self.worker
        if worker is None:
            response.success, response.message = False, 'the node is not configured'
            return response
        try:
            result = await self._answer(worker.submit_remove(list(request.ids)))
        except Exception as error:
            response.success, response.message = False, str(error)
            return response
        response.success = True
        response.removed, response.unknown = result.removed, result.unknown
        response.message = (f'removed {result.removed}' +
                            (f'; not tracked: {result.unknown}' if result.unknown else ''))
        if result.unknown:
            self.warnings.warn('remove_unknown', f"'{REMOVE_SERVICE}': {result.unknown} "
                               'are not tracked')
        return response

    async def _on_reset(self, request: Trigger.Request,
                        response: Trigger.Response) -> Trigger.Response:
        worker = self.worker
        if worker is None:
            response.success, response.message = True, 'nothing to reset (not configured)'
            return response
        try:
            cleared = await self._answer(worker.submit_reset())
        except Exception as error:
            response.success, response.message = False, str(error)
            return response
        response.success = True
        response.message = f'cleared {len(cleared)} object(s) {cleared} and the memory'
        self.get_logger().info(f'reset: {response.message}')
        return response

    async def _answer(self, pending: ConcurrentFuture) -> Any:
        """Await a worker future without blocking the executor; return its result.

        The rclpy future has a done callback, so completing it from the worker thread
        wakes the executor, which then resumes this coroutine.
        """
        executor = self.executor
        if executor is None:  # not spinning: wait in this thread
            return pending.result()
        future: Future = Future(executor=executor)
        future.add_done_callback(lambda _: None)
        pending.add_done_callback(future.set_result)
        done: ConcurrentFuture = await future
        return done.result()

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        reason = validate_update(parameters)
        if reason is not None:
            return SetParametersResult(successful=False, reason=reason)
        for parameter in parameters:
            self.settings.set_parameter(parameter.name, parameter.value)
        self.limits.max_objects = self.settings.max_objects
        self.limits.seed_tolerance_sec = self.settings.seed_tolerance_sec
        self.limits.seed_wait_sec = self.settings.seed_wait_sec
        return SetParametersResult(successful=True)

    # ---------------------------------------------------------------------- status outputs
    def _log_summary(self) -> None:
        worker = self.worker
        objects = worker.snapshot().objects if worker is not None else 0
        self.get_logger().info(self._summary_reader.read(objects=objects).format())

    def _publish_diagnostics(self) -> None:
        worker = self.worker
        snapshot = worker.snapshot() if worker is not None else None
        status = node_status(
            f'{self.get_name()}: tracking', self.get_fully_qualified_name(), self.state,
            self._diagnostics_reader.read(), snapshot or WorkerSnapshot(),
            self.settings.diagnostic_thresholds(), self.worker_error,
            extra=(self.objects_3d.diagnostic_values(self.warnings.counts)
                   if self.objects_3d is not None else ()))
        message = DiagnosticArray(status=[status])
        message.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(message)

    def _on_worker_failure(self, error: BaseException) -> None:
        """Report a dead worker (ERROR on /diagnostics) and let main() exit 1."""
        self.worker_error = error
        self.get_logger().fatal(f'the inference worker died: {type(error).__name__}: {error}')
        try:
            self._publish_diagnostics()
        finally:
            self.failed.set()

    def _log(self, level: int, text: str) -> None:
        logger = self.get_logger()
        if level >= logging.ERROR:
            logger.error(text, throttle_duration_sec=self.settings.warning_throttle_sec)
        elif level >= logging.WARNING:
            logger.warning(text)
        else:
            logger.info(text)

    # ------------------------------------------------------------------- worker callbacks
    def _convert(self, msg: Frame):
        """Return a frame message as (H, W, 3) uint8 RGB (ImageConversionError if bad)."""
        settings = self.settings
        if isinstance(msg, CompressedImage):
            return compressed_to_rgb(msg, settings.max_image_pixels,
                                     settings.max_compressed_bytes)
        return image_to_rgb(msg, settings.max_image_pixels)

    def _publish(self, output: FrameOutput) -> None:
        """Publish masks, objects and (when wanted) the overlay with the frame's header."""
        result, presence, ids = output.result, output.presence, output.names
        frame, rgb = output.frame, output.rgb
        header = frame.item.header
        self.masks_pub.publish(numpy_to_image(result.labels, 'mono8', header))
        self.objects_pub.publish(tracked_objects_message(result, presence, ids, header))
        if self.settings.overlay and self.overlay_pub.get_subscription_count() > 0:
            self.overlay_pub.publish(numpy_to_image(overlay(rgb, result.labels, names=ids),
                                                    'rgb8', header))
            self.overlays_published += 1
        if self.objects_3d is not None:
            self._publish_3d(result, ids, frame.stamp_ns, header)

    def _publish_3d(self, result: TrackResult, ids: dict[int, str], stamp_ns: int,
                    header: Header) -> None:
        """Publish objects_3d (and the cloud and markers when subscribed) after the masks."""
        try:
            frame = self.objects_3d.measure(result.labels, result.object_ids, stamp_ns, ids)
            self.objects_3d_pub.publish(objects_3d_message(frame, ids, header))
            if self.cloud_pub.get_subscription_count() > 0:
                self.cloud_pub.publish(cloud_message(frame, header,
                                                     self.settings.depth_cloud_max_points))
            if self.markers_pub.get_subscription_count() > 0:
                self.markers_pub.publish(markers_message(frame, ids, header))
        except Exception as error:  # the masks are out: a 3D failure must not count them lost
            self.warnings.warn('objects_3d_error', f'3D positions failed: '
                               f'{type(error).__name__}: {error}')


def spin_until_failure(node: DefvosNode, executor: Executor) -> int:
    """Spin until shutdown (0) or until the node's worker dies (1).

    Ctrl-C shuts the context down from rclpy's signal handler, possibly between the check
    and the executor's wait, which then fails ('the given context is not valid'): an error
    once the context is down ends the loop like the shutdown itself.
    """
    while rclpy.ok(context=executor.context) and not node.failed.is_set():
        try:
            executor.spin_once(timeout_sec=0.1)
        except Exception:
            if rclpy.ok(context=executor.context):
                raise
    return 1 if node.failed.is_set() else 0


def main(args: Optional[list[str]] = None) -> int:
    """Run the node (``ros2 run defvos_ros segmenter`` / ``python -m defvos_ros``).

    Exit code 0 after Ctrl-C / shutdown, 1 when start-up fails (one FATAL line) or the
    inference worker dies.
    """
    rclpy.init(args=args)
    node: Optional[DefvosNode] = None
    executor: Optional[Executor] = None
    code = 0
    try:
        node = DefvosNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        code = spin_until_failure(node, executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # Ctrl-C at any moment, also while the model loads, ends the node cleanly
    except Exception as error:
        # rclpy's SIGINT handler shuts the context down wherever the main thread is: a
        # lifecycle transition then fails to publish its event, an executor cannot be made
        # on the dead context... An error once the context is down is that Ctrl-C: exit 0.
        if rclpy.ok():
            if not isinstance(error, StartupError):
                raise
            rclpy.logging.get_logger(NODE_NAME).fatal(f'start-up failed: {error}')
            code = 1
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=0.5)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


def entry_point() -> None:
    """Console entry: run `main`, then exit at once with its code.

    Interpreter finalisation after rclpy's shutdown (native libraries' destructors) took
    1.3-2.1 s here with nothing left to do; ``os._exit`` skips it, so Ctrl-C ends the
    process well within a second (launch escalates to SIGTERM after 5 s). Everything the
    node owns is already closed by `main`; the standard streams are flushed first.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
