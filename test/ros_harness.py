"""Shared harness of the node tests: one rclpy context per module, executors, a DDS client.

Every node test talks to a real DefvosNode through rclpy and rmw_fastrtps_cpp on loopback,
no mocks: the node spins in an executor of this process (or runs as a subprocess where the
exit code matters), in a ROS domain of its own (ROS_DOMAIN_ID derived from the pid, set
before rclpy.init). Frames are the shipped sample clip at processing size 120 with one
torch thread. Each test starts its node in its own namespace so that no endpoint of an
earlier test can be matched. Tests wait for the event they need (generous timeouts), never
for a fixed time.

Import the fixtures into a test module with
``from ros_harness import clip, pipeline, ros, ros_context  # noqa: F401``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np
import pytest
import rclpy
import torch
from defvos_interfaces.msg import ObjectPrompt, TrackedObjectArray
from defvos_interfaces.srv import AddObjects, RemoveObjects
from rcl_interfaces.msg import Log
from rclpy.executors import (ExternalShutdownException, MultiThreadedExecutor,
                             ShutdownException, SingleThreadedExecutor)
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

import defvos_core
from defvos_core.build import build_tracker
from defvos_core.config import TrackerConfig
from defvos_core.data.masks import read_label_map
from defvos_core.data.video_io import iter_video_frames
from defvos_ros.image_conversion import numpy_to_image
from defvos_ros.messages import box_message
from defvos_ros.node import DefvosNode
from defvos_ros.ros_helpers import stamp_to_ns

DOMAIN_ID = 1 + os.getpid() % 50  # 1..50; the demo test uses DOMAIN_ID + 50
os.environ['ROS_DOMAIN_ID'] = str(DOMAIN_ID)  # before any rclpy.init of this process
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
CLIP = Path(defvos_core.__file__).resolve().parent / 'assets' / 'sample' / 'bear'
SIZE = 120
MASK_TIMEOUT = 20.0  # generous: two cores shared by several engineers
NODE_PARAMETERS = {'size': SIZE, 'num_threads': 1, 'max_objects': 4,
                   'warning_throttle_sec': 60.0, 'summary_period_sec': 0.0,
                   'seed_wait_sec': 1.0}
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
_names = itertools.count()
_stamps = itertools.count()


def next_stamp() -> int:
    """Distinct, increasing stamps (ns) across the module, 40 ms apart."""
    return 1_700_000_000 * 10**9 + next(_stamps) * 40_000_000


def header(stamp: int, frame_id: str = 'test_camera') -> Header:
    """Return a header stamped ``stamp`` ns."""
    msg = Header(frame_id=frame_id)
    msg.stamp.sec, msg.stamp.nanosec = divmod(stamp, 10**9)
    return msg


def wait_until(predicate, timeout: float = MASK_TIMEOUT, step: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def object_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Return the mean IoU over the objects of two label maps (1.0 when neither has one).

    Compared on the objects, not on all pixels: an object covering 11 % of the frame could
    vanish while 89 % of the pixels still agree.
    """
    ids = sorted((set(np.unique(a)) | set(np.unique(b))) - {0})
    if not ids:
        return 1.0
    return float(np.mean([np.logical_and(a == k, b == k).sum() / np.logical_or(a == k, b == k).sum()
                          for k in ids]))


@contextlib.contextmanager
def slow_model(node: DefvosNode) -> Iterator[threading.Event]:
    """Hold the node's next ``tracker.step`` until the block ends (a slow model).

    The yielded event is set once the worker is inside that step.
    """
    tracker = node.tracker
    original = tracker.step
    started, release = threading.Event(), threading.Event()

    def held_step(*args, **kwargs):
        tracker.step = original
        started.set()
        release.wait(MASK_TIMEOUT)
        return original(*args, **kwargs)

    tracker.step = held_step
    try:
        yield started
    finally:
        release.set()


@pytest.fixture(scope='module')
def clip():
    """Return the sample clip's frames and ground-truth label maps (41 each, 427x240)."""
    frames = [rgb for _, rgb in iter_video_frames(CLIP / 'frames')]
    masks = [read_label_map(path) for path in sorted((CLIP / 'masks').glob('*.png'))]
    assert len(frames) == len(masks) == 41
    return frames, masks


class Spinner:
    """An executor spinning in a thread; callback errors are kept, not lost.

    rclpy lets an exception raised in a callback out of spin(), which would silently stop
    every later callback; here it is recorded and reported by the test that caused it.
    Multi-threaded by default; ``single=True`` for the single-threaded executor.
    """

    def __init__(self, context: rclpy.Context, single: bool = False) -> None:
        self.executor = (SingleThreadedExecutor(context=context) if single
                         else MultiThreadedExecutor(num_threads=4, context=context))
        self.nodes: list[Node] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, name='test-executor', daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except (ExternalShutdownException, ShutdownException):
                return
            except Exception as error:  # reported by close()
                self.errors.append(error)

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def close(self) -> list[BaseException]:
        """Stop spinning, then destroy the nodes (never while a callback may run)."""
        self._stop.set()
        self.thread.join(timeout=10)
        self.executor.shutdown(timeout_sec=10)
        for node in self.nodes:
            node.destroy_node()
        return self.errors


class Ros:
    """One rclpy context for the module, a /rosout listener, and one executor per test."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.logs: list[Log] = []
        self._logs_lock = threading.Lock()
        self._listener = Spinner(self.context)
        listener = self._listener.add(Node('test_rosout_listener', context=self.context))
        listener.create_subscription(Log, '/rosout', self._on_log, RELIABLE)
        self.spinner: Optional[Spinner] = None

    def _on_log(self, msg: Log) -> None:
        with self._logs_lock:
            self.logs.append(msg)

    def log_messages(self, logger_name: str, text: str) -> list[str]:
        """Return the /rosout messages of ``logger_name`` containing ``text``."""
        with self._logs_lock:
            return [m.msg for m in self.logs if m.name == logger_name and text in m.msg]

    def wait_log(self, logger_name: str, text: str, timeout: float = 10.0) -> str:
        """Wait for a /rosout message of ``logger_name`` containing ``text``."""
        assert wait_until(lambda: self.log_messages(logger_name, text), timeout), (
            f'no /rosout message from {logger_name!r} containing {text!r}; got '
            f'{[m.msg for m in self.logs if m.name == logger_name]}')
        return self.log_messages(logger_name, text)[0]

    def add(self, node: Node) -> Node:
        """Spin ``node`` until the end of the test, then destroy it."""
        return self.spinner.add(node)

    def use_executor(self, kind: str) -> None:
        """Spin this test's nodes in a 'single'- or 'multi'-threaded executor (before adding)."""
        assert not self.spinner.nodes, 'choose the executor before starting nodes'
        self.spinner.close()
        self.spinner = Spinner(self.context, single=kind == 'single')

    def remove(self, node: Node) -> None:
        """Stop spinning ``node`` (it is destroyed at the end of the test)."""
        self.spinner.executor.remove_node(node)

    def close(self) -> None:
        self._listener.close()
        rclpy.shutdown(context=self.context)


@pytest.fixture(scope='module')
def ros_context():
    """Provide the module's ROS context (own domain) and its /rosout listener."""
    harness = Ros()
    yield harness
    harness.close()


@pytest.fixture
def ros(ros_context):
    """Provide the ROS harness with an executor for this test; fail on callback errors."""
    ros_context.spinner = Spinner(ros_context.context)
    yield ros_context
    errors = ros_context.spinner.close()
    ros_context.spinner = None
    assert not errors, f'callbacks raised: {errors!r}'


def start_node(ros: Ros, namespace: str = '', **parameters) -> DefvosNode:
    """Start a DefvosNode (size 120, 1 thread) in ``namespace`` with extra parameters."""
    values = dict(NODE_PARAMETERS, **parameters)
    node = DefvosNode(context=ros.context, namespace=namespace,
                      parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    return ros.add(node)


class Client:
    """The test's side of the wire: publishes frames/seeds, receives masks, calls services.

    Topic names are spelled out absolutely (not read from the node) so that the documented
    names are what is tested.
    """

    def __init__(self, ros: Ros, node: DefvosNode, namespace: str = '',
                 compressed: bool = False) -> None:
        self.ros, self.node = ros, node
        prefix = f'/{namespace}' if namespace else ''
        self.names = {
            'image': f'{prefix}/image' + ('/compressed' if compressed else ''),
            'seed': f'{prefix}/seed_mask', 'masks': f'{prefix}/defvos/masks',
            'objects': f'{prefix}/defvos/objects', 'overlay': f'{prefix}/defvos/overlay',
            'reset': f'{prefix}/defvos/reset', 'remove': f'{prefix}/defvos/remove_objects',
            'add': f'{prefix}/defvos/add_objects'}
        self.ros_node = ros.add(Node(f'test_client_{next(_names)}', context=ros.context))
        image_type = CompressedImage if compressed else Image
        self.image_pub = self.ros_node.create_publisher(image_type, self.names['image'],
                                                        RELIABLE)
        self.seed_pub = self.ros_node.create_publisher(Image, self.names['seed'], RELIABLE)
        self.reset_client = self.ros_node.create_client(Trigger, self.names['reset'])
        self.remove_client = self.ros_node.create_client(RemoveObjects, self.names['remove'])
        self.add_client = self.ros_node.create_client(AddObjects, self.names['add'])
        self.masks: dict[int, Image] = {}  # the last mask of each stamp
        self.mask_log: list[Image] = []  # every mask, in arrival order
        self.objects: list[TrackedObjectArray] = []
        self.overlays: dict[int, Image] = {}
        self._lock = threading.Lock()
        self.ros_node.create_subscription(Image, self.names['masks'], self._on_mask, RELIABLE)
        self.ros_node.create_subscription(TrackedObjectArray, self.names['objects'],
                                          self._on_objects, RELIABLE)
        self.overlay_sub = None
        assert wait_until(self._matched), f'node and client did not match: {self.names}'

    def _matched(self) -> bool:
        node = self.node
        return (self.image_pub.get_subscription_count() > 0
                and self.seed_pub.get_subscription_count() > 0
                and self.remove_client.service_is_ready()
                and self.add_client.service_is_ready()
                and node.masks_pub.get_subscription_count() > 0
                and node.objects_pub.get_subscription_count() > 0
                and node.count_publishers(node.image_topic) > 0
                and self.reset_client.service_is_ready())

    def _on_mask(self, msg: Image) -> None:
        with self._lock:
            self.masks[stamp_to_ns(msg.header.stamp)] = msg
            self.mask_log.append(msg)

    def _on_objects(self, msg: TrackedObjectArray) -> None:
        with self._lock:
            self.objects.append(msg)

    def _on_overlay(self, msg: Image) -> None:
        with self._lock:
            self.overlays[stamp_to_ns(msg.header.stamp)] = msg

    def subscribe_overlay(self) -> None:
        self.overlay_sub = self.ros_node.create_subscription(Image, self.names['overlay'],
                                                             self._on_overlay, RELIABLE)
        assert wait_until(lambda: self.node.overlay_pub.get_subscription_count() > 0)

    # ---------------------------------------------------------------------------- sending
    def send(self, msg) -> None:
        """Publish an image message and wait until the node's callback has it."""
        before = self.node.stats.total_received
        self.image_pub.publish(msg)
        assert wait_until(lambda: self.node.stats.total_received > before), \
            'the node did not receive the frame'

    def send_frame(self, rgb: np.ndarray, stamp: int, encoding: str = 'rgb8') -> None:
        self.send(numpy_to_image(encode(rgb, encoding), encoding, header(stamp)))

    def send_seed(self, labels: np.ndarray, stamp: int, encoding: str = 'mono8') -> None:
        dtype = np.uint16 if encoding in ('mono16', '16UC1') else np.uint8
        self.seed_pub.publish(numpy_to_image(labels.astype(dtype), encoding, header(stamp)))

    def wait_mask(self, stamp: int, timeout: float = MASK_TIMEOUT) -> Image:
        assert wait_until(lambda: stamp in self.masks, timeout), \
            f'no mask stamped {stamp} on {self.names["masks"]} within {timeout} s'
        return self.masks[stamp]

    def wait_mask_number(self, stamp: int, number: int) -> np.ndarray:
        """Wait for the ``number``-th mask stamped ``stamp``; return its labels."""
        def masks():
            with self._lock:
                return [m for m in self.mask_log if stamp_to_ns(m.header.stamp) == stamp]

        assert wait_until(lambda: len(masks()) >= number), f'{len(masks())} masks for {stamp}'
        return labels_of(masks()[number - 1])

    def track(self, frames, seed: np.ndarray, stamps: list[int]) -> list[np.ndarray]:
        """Send frame 0 and its seed, then each frame after the previous one's mask."""
        self.send_frame(frames[0], stamps[0])
        self.send_seed(seed, stamps[0])
        labels = [labels_of(self.wait_mask(stamps[0]))]
        for frame, stamp in zip(frames[1:], stamps[1:]):
            self.send_frame(frame, stamp)
            labels.append(labels_of(self.wait_mask(stamp)))
        return labels

    def step(self, frame: np.ndarray) -> np.ndarray:
        """Send one frame with a new stamp and return its mask."""
        stamp = next_stamp()
        self.send_frame(frame, stamp)
        return labels_of(self.wait_mask(stamp))

    def call(self, client, request, timeout: float = MASK_TIMEOUT):
        """Call a service and return its response (waits for the answer)."""
        future = client.call_async(request)
        assert wait_until(future.done, timeout), f'no answer from {client.srv_name}'
        return future.result()

    def reset(self) -> Trigger.Response:
        return self.call(self.reset_client, Trigger.Request())

    def remove(self, *object_ids: str) -> RemoveObjects.Response:
        return self.call(self.remove_client, RemoveObjects.Request(ids=list(object_ids)))

    def add(self, stamp: int, prompts: list[ObjectPrompt]) -> AddObjects.Response:
        """Call ~/add_objects for the frame stamped ``stamp``."""
        return self.call(self.add_client, AddObjects.Request(header=header(stamp),
                                                             objects=prompts))

    def last_objects(self) -> dict[str, object]:
        """Return the last TrackedObjectArray's objects by id."""
        with self._lock:
            msg = self.objects[-1]
        return {item.id: item for item in msg.objects}

    def objects_for(self, stamp: int) -> TrackedObjectArray:
        """Wait for the objects message stamped ``stamp``."""
        def found():
            with self._lock:
                return [m for m in self.objects if stamp_to_ns(m.header.stamp) == stamp]

        assert wait_until(found), f'no objects message stamped {stamp}'
        return found()[-1]


def mask_prompt(object_id: str, mask: np.ndarray) -> ObjectPrompt:
    """Return a mask prompt (nonzero = the object) as a mono8 image."""
    return ObjectPrompt(id=object_id, kind=ObjectPrompt.KIND_MASK,
                        mask=numpy_to_image((mask != 0).astype(np.uint8), 'mono8'))


def box_prompt(object_id: str, x0: float, y0: float, x1: float, y1: float) -> ObjectPrompt:
    """Return a box prompt in pixel corners."""
    return ObjectPrompt(id=object_id, kind=ObjectPrompt.KIND_BOX,
                        box=box_message(x0, y0, x1, y1))


def encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """Lay an RGB frame out as ``encoding`` needs (for numpy_to_image)."""
    conversions = {
        'rgb8': lambda a: a, 'bgr8': lambda a: a[..., ::-1],
        'mono8': lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2GRAY),
        'rgba8': lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2RGBA),
        'bgra8': lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2BGRA),
        'yuv422': lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2YUV_UYVY),
        'yuv422_yuy2': lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2YUV_YUY2),
    }
    return np.ascontiguousarray(conversions[encoding](rgb))


def labels_of(msg: Image) -> np.ndarray:
    """Return a mono8 mask message as an (H, W) uint8 array (checks the layout)."""
    assert msg.encoding == 'mono8'
    assert msg.step == msg.width and msg.is_bigendian == 0
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width).copy()


@pytest.fixture
def pipeline(ros):
    """Provide fresh nodes in their own namespace with a client (destroyed by `ros`)."""
    def make(namespace=None, compressed=False, **parameters):
        namespace = f'ns{next(_names)}' if namespace is None else namespace
        node = start_node(ros, namespace, use_compressed=compressed, **parameters)
        client = Client(ros, node, namespace, compressed)
        return node, client

    return make


def offline_labels(frames, seed, weights=None) -> list[np.ndarray]:
    """Return the bare Tracker's labels for frames[0] + seed, then each later frame."""
    tracker = build_tracker(weights, TrackerConfig(size=SIZE))
    labels = [tracker.add_objects(frames[0], seed).labels]
    labels += [tracker.step(frame).labels for frame in frames[1:]]
    return labels
