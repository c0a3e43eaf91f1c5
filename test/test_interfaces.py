"""Tests of the defvos_interfaces messages and services, as built into the venv by setup.sh.

scripts/setup.sh builds defvos_interfaces (scripts/build_interfaces.sh) into the venv, so
nothing here skips: a missing or stale build fails. The field layouts are checked against
the definitions the node and its users rely on (geometry mirrors vision_msgs field for
field), then the types go over real DDS (rclpy, rmw_fastrtps_cpp, loopback): a topic round
trip of a TrackedObjectArray and calls of both services. The ROS domain is derived from the
pid (101..150, apart from test_node.py's 1..100) and passed to rclpy.init, so the process
environment is left alone.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from defvos_interfaces.msg import BoundingBox2D, BoundingBox3D, Object3D, Object3DArray, \
    ObjectPrompt, Point2D, Pose2D, TrackedObject, TrackedObjectArray
from defvos_interfaces.srv import AddObjects, RemoveObjects

DOMAIN_ID = 101 + os.getpid() % 50
TIMEOUT = 20.0  # generous: two cores shared by several engineers
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)

FIELDS = {
    Point2D: {'x': 'double', 'y': 'double'},
    Pose2D: {'position': 'defvos_interfaces/Point2D', 'theta': 'double'},
    BoundingBox2D: {'center': 'defvos_interfaces/Pose2D', 'size_x': 'double',
                    'size_y': 'double'},
    ObjectPrompt: {'id': 'string', 'kind': 'uint8', 'box': 'defvos_interfaces/BoundingBox2D',
                   'points': 'sequence<defvos_interfaces/Point2D>',
                   'point_labels': 'sequence<uint8>', 'mask': 'sensor_msgs/Image'},
    TrackedObject: {'id': 'string', 'mask_value': 'uint8',
                    'bbox': 'defvos_interfaces/BoundingBox2D', 'score': 'float',
                    'area_fraction': 'float', 'present': 'boolean',
                    'frames_since_seen': 'uint32'},
    TrackedObjectArray: {'header': 'std_msgs/Header',
                         'objects': 'sequence<defvos_interfaces/TrackedObject>'},
    BoundingBox3D: {'center': 'geometry_msgs/Pose', 'size': 'geometry_msgs/Vector3'},
    Object3D: {'id': 'string', 'mask_value': 'uint8', 'has_position': 'boolean',
               'status': 'uint8', 'position': 'geometry_msgs/Point',
               'bbox': 'defvos_interfaces/BoundingBox3D', 'valid_points': 'uint32'},
    Object3DArray: {'header': 'std_msgs/Header', 'depth_stamp': 'builtin_interfaces/Time',
                    'objects': 'sequence<defvos_interfaces/Object3D>'},
    AddObjects.Request: {'header': 'std_msgs/Header',
                         'objects': 'sequence<defvos_interfaces/ObjectPrompt>'},
    AddObjects.Response: {'success': 'boolean', 'message': 'string',
                          'ids': 'sequence<string>', 'mask_values': 'sequence<uint8>'},
    RemoveObjects.Request: {'ids': 'sequence<string>'},
    RemoveObjects.Response: {'success': 'boolean', 'message': 'string',
                             'removed': 'sequence<string>', 'unknown': 'sequence<string>'},
}


def box(cx: float, cy: float, width: float, height: float) -> BoundingBox2D:
    """Return an axis-aligned box by its center and size in pixels."""
    return BoundingBox2D(center=Pose2D(position=Point2D(x=cx, y=cy)), size_x=width,
                         size_y=height)


def stamped(sec: int, nanosec: int) -> Header:
    """Return a camera header stamped ``sec``.``nanosec``."""
    msg = Header(frame_id='test_camera')
    msg.stamp.sec, msg.stamp.nanosec = sec, nanosec
    return msg


def prompts() -> list[ObjectPrompt]:
    """Return one prompt of each kind, with the optional parts filled in."""
    mask = Image(height=2, width=3, encoding='mono8', step=3, data=[0, 1, 1, 0, 0, 255])
    return [
        ObjectPrompt(id='cup', kind=ObjectPrompt.KIND_BOX, box=box(40.5, 30.0, 20.0, 10.0)),
        ObjectPrompt(id='hand', kind=ObjectPrompt.KIND_POINTS,
                     points=[Point2D(x=1.0, y=2.0), Point2D(x=3.5, y=4.25)],
                     point_labels=[1, 0]),
        ObjectPrompt(id='tool-3', kind=ObjectPrompt.KIND_MASK, mask=mask),
    ]


@pytest.mark.parametrize('message', FIELDS, ids=lambda message: message.__name__)
def test_fields(message):
    """Each type has exactly the documented fields, in order, with their types."""
    assert list(message.get_fields_and_field_types().items()) == list(FIELDS[message].items())


def test_prompt_kinds():
    """An ObjectPrompt's kind is one of three distinct constants: box, points, mask."""
    assert (ObjectPrompt.KIND_BOX, ObjectPrompt.KIND_POINTS, ObjectPrompt.KIND_MASK) == (0, 1, 2)
    assert ObjectPrompt().kind == ObjectPrompt.KIND_BOX  # the default is a (zero) box


def test_installed_in_the_venv_prefix():
    """The package is in the venv's ament index with its definitions under share/."""
    prefix = Path(sys.prefix)
    assert (prefix / 'share/ament_index/resource_index/packages/defvos_interfaces').is_file()
    share = prefix / 'share/defvos_interfaces'
    assert (share / 'package.xml').is_file()
    for name in ('Point2D', 'Pose2D', 'BoundingBox2D', 'ObjectPrompt', 'TrackedObject',
                 'TrackedObjectArray', 'BoundingBox3D', 'Object3D', 'Object3DArray'):
        assert (share / 'msg' / f'{name}.msg').is_file(), name
    for name in ('AddObjects', 'RemoveObjects'):
        assert (share / 'srv' / f'{name}.srv').is_file(), name


@pytest.fixture
def ros():
    """Yield add_node(name): a node of a fresh context in DOMAIN_ID, spun in a thread."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    executor = MultiThreadedExecutor(num_threads=2, context=context)

    def spin() -> None:
        try:
            executor.spin()
        except ExternalShutdownException:
            pass

    thread = threading.Thread(target=spin, name='test-interfaces-executor', daemon=True)
    thread.start()
    nodes: list[Node] = []

    def add_node(name: str) -> Node:
        node = Node(name, context=context)
        nodes.append(node)
        executor.add_node(node)
        return node

    yield add_node
    executor.shutdown(timeout_sec=10)
    thread.join(timeout=10)
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown(context=context)


def wait_until(predicate, what: str) -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after TIMEOUT seconds."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, f'timed out after {TIMEOUT} s waiting for {what}'
        time.sleep(0.01)


def round_trip(ros, name: str, sent) -> list:
    """Publish `sent` on /test_interfaces/<name> from one node; what another node received."""
    kind, topic = type(sent), f'/test_interfaces/{name}'
    received: list = []
    subscription = ros(f'test_{name}_subscriber').create_subscription(
        kind, topic, received.append, RELIABLE)
    publisher = ros(f'test_{name}_publisher').create_publisher(kind, topic, RELIABLE)
    wait_until(lambda: (publisher.get_subscription_count() > 0
                        and subscription.get_publisher_count() > 0),
               'the publisher and the subscription to match')
    publisher.publish(sent)
    wait_until(lambda: received, f'the {kind.__name__}')
    return received


def test_tracked_objects_round_trip(ros):
    """A TrackedObjectArray published by one node arrives equal at another."""
    sent = TrackedObjectArray(header=stamped(1_700_000_000, 40_000_000), objects=[
        TrackedObject(id='cup', mask_value=1, bbox=box(40.5, 30.0, 21.0, 11.0), score=0.875,
                      area_fraction=0.0625, present=True, frames_since_seen=0),
        TrackedObject(id='hand', mask_value=2, present=False, frames_since_seen=7),
    ])
    assert round_trip(ros, 'objects', sent) == [sent]


def test_object_3d_statuses_and_round_trip(ros):
    """The 3D statuses are distinct (0 = a position) and an Object3DArray crosses DDS intact."""
    statuses = [Object3D.STATUS_OK, Object3D.STATUS_ABSENT, Object3D.STATUS_NO_DEPTH_POINTS,
                Object3D.STATUS_NO_DEPTH_FRAME, Object3D.STATUS_BAD_DEPTH_FRAME,
                Object3D.STATUS_NO_CAMERA_INFO]
    assert statuses == list(range(6))
    located = Object3D(id='cup', mask_value=1, has_position=True, valid_points=812)
    located.position.x, located.position.y, located.position.z = 0.1, -0.05, 1.25
    located.bbox.center.position.z, located.bbox.center.orientation.w = 1.26, 1.0
    located.bbox.size.x, located.bbox.size.y, located.bbox.size.z = 0.08, 0.12, 0.03
    sent = Object3DArray(header=stamped(1_700_000_000, 40_000_000), objects=[
        located, Object3D(id='hand', mask_value=2, status=Object3D.STATUS_NO_DEPTH_POINTS)])
    sent.depth_stamp.sec, sent.depth_stamp.nanosec = 1_700_000_000, 38_000_000
    assert round_trip(ros, 'objects_3d', sent) == [sent]


def test_object_services(ros):
    """Servers of AddObjects and RemoveObjects receive the requests intact and answer clients."""
    tracked: dict[str, int] = {}  # id -> mask value, the server's state
    requests: list = []

    def add_objects(request: AddObjects.Request, response: AddObjects.Response):
        requests.append(request)
        for prompt in request.objects:
            tracked.setdefault(prompt.id, len(tracked) + 1)  # a known id keeps its value
        response.success, response.message = True, f'{len(request.objects)} objects'
        response.ids = [prompt.id for prompt in request.objects]
        response.mask_values = [tracked[prompt.id] for prompt in request.objects]
        return response

    def remove_objects(request: RemoveObjects.Request, response: RemoveObjects.Response):
        response.removed = [i for i in request.ids if tracked.pop(i, None) is not None]
        response.unknown = [i for i in request.ids if i not in response.removed]
        response.success, response.message = True, f'{len(response.removed)} removed'
        return response

    server = ros('test_objects_server')
    server.create_service(AddObjects, '/test_interfaces/add_objects', add_objects)
    server.create_service(RemoveObjects, '/test_interfaces/remove_objects', remove_objects)
    client = ros('test_objects_client')
    add = client.create_client(AddObjects, '/test_interfaces/add_objects')
    remove = client.create_client(RemoveObjects, '/test_interfaces/remove_objects')

    def call(service, request):
        assert service.wait_for_service(timeout_sec=TIMEOUT), \
            f'service {service.srv_name} not available after {TIMEOUT} s'
        future = service.call_async(request)
        wait_until(future.done, f'the response of {service.srv_name}')
        return future.result()

    sent = AddObjects.Request(header=stamped(1_700_000_001, 0), objects=prompts())
    added = call(add, sent)
    assert requests == [sent]
    assert (added.success, added.ids, list(added.mask_values)) == (
        True, ['cup', 'hand', 'tool-3'], [1, 2, 3])
    replaced = call(add, AddObjects.Request(objects=prompts()[:1]))
    assert (replaced.ids, list(replaced.mask_values)) == (['cup'], [1])

    removed = call(remove, RemoveObjects.Request(ids=['hand', 'ghost']))
    assert (removed.success, removed.removed, removed.unknown) == (True, ['hand'], ['ghost'])
