"""Depth and CameraInfo messages -> metres and K, and the 3D results -> messages (no DDS).

The 3D stage (`Objects3DStage`) is driven here with real sensor_msgs messages and a
recording ``warn``: each bad input gives a per-object status, a counter and a warning of
its kind. The node-level tests over DDS are in test_node_depth.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from defvos_interfaces.msg import Object3D
from sensor_msgs.msg import CameraInfo, PointCloud2
from visualization_msgs.msg import Marker

from defvos_core.depth.geometry import Objects3DConfig
from defvos_core.overlay import PALETTE
from defvos_core.errors import DepthError
from defvos_ros.depth_conversion import camera_intrinsics, depth_pixels
from defvos_ros.image_conversion import numpy_to_image
from defvos_ros.messages_3d import cloud_message, markers_message, objects_3d_message
from defvos_ros.objects_3d import Objects3DStage
from ros_harness import header

HEIGHT, WIDTH = 60, 80
K = [100.0, 0.0, 40.0, 0.0, 100.0, 30.0, 0.0, 0.0, 1.0]


def camera_info(k=K, width=WIDTH, height=HEIGHT) -> CameraInfo:
    """Return a CameraInfo of the test camera."""
    return CameraInfo(width=width, height=height, k=k)


def metres(msg, shape=(HEIGHT, WIDTH)) -> np.ndarray:
    """Return a depth message in metres through depth_pixels."""
    pixels, scale = depth_pixels(msg, shape)
    return pixels.astype(np.float32) * np.float32(scale)


def test_depth_encodings_become_metres():
    millimetres = np.arange(HEIGHT * WIDTH, dtype=np.uint16).reshape(HEIGHT, WIDTH)
    for encoding in ('16UC1', 'mono16'):
        pixels, scale = depth_pixels(numpy_to_image(millimetres, encoding), (HEIGHT, WIDTH))
        assert (pixels.dtype, scale) == (np.uint16, 1e-3)
        assert np.allclose(metres(numpy_to_image(millimetres, encoding)), millimetres / 1000.0)
    floats = np.full((HEIGHT, WIDTH), 1.25, np.float32)
    floats[0, :3] = (np.nan, 0.0, np.inf)
    assert np.array_equal(metres(numpy_to_image(floats, '32FC1')), floats, equal_nan=True)
    big = numpy_to_image(millimetres, '16UC1')  # big-endian data with a padded step
    rows = millimetres.astype('>u2').view(np.uint8).reshape(HEIGHT, -1)
    big.is_bigendian, big.step = 1, WIDTH * 2 + 6
    big.data = np.hstack([rows, np.zeros((HEIGHT, 6), np.uint8)]).tobytes()
    assert np.allclose(metres(big), millimetres / 1000.0)


@pytest.mark.parametrize('case, kind', [('rgb8', 'depth_encoding'), ('size', 'depth_size'),
                                        ('short', 'depth_data')])
def test_bad_depth_images_are_refused_by_kind(case, kind):
    depth = np.ones((HEIGHT, WIDTH), np.uint16)
    msg = numpy_to_image(depth, '16UC1')
    if case == 'rgb8':
        msg = numpy_to_image(np.zeros((HEIGHT, WIDTH, 3), np.uint8), 'rgb8')
    elif case == 'size':
        msg = numpy_to_image(depth[:, :40], '16UC1')
    else:
        msg.data = bytes(msg.data)[:100]
    with pytest.raises(DepthError) as error:
        depth_pixels(msg, (HEIGHT, WIDTH))
    assert error.value.kind == kind


def test_camera_info_gives_k_or_says_why_not():
    k = camera_intrinsics(camera_info(), (HEIGHT, WIDTH))
    assert (k.fx, k.fy, k.cx, k.cy) == (100.0, 100.0, 40.0, 30.0)
    assert camera_intrinsics(camera_info(width=0, height=0), (HEIGHT, WIDTH)) == k
    for info, kind in ((camera_info(k=[0.0] * 9), 'camera_info_invalid'),
                       (camera_info(width=640, height=480), 'camera_info_size')):
        with pytest.raises(DepthError) as error:
            camera_intrinsics(info, (HEIGHT, WIDTH))
        assert error.value.kind == kind


class Warnings:
    """Records warn(kind, text, rejected) calls like the node's InputWarnings."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool]] = []

    def __call__(self, kind: str, text: str, rejected: bool = True) -> None:
        self.calls.append((kind, text, rejected))

    @property
    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.calls]


def scene() -> tuple[np.ndarray, np.ndarray]:
    """Return labels (object 1: a 20x20 square at 1 m, object 2: 10x10 with no depth)."""
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    labels[10:30, 10:30] = 1
    labels[40:50, 50:60] = 2
    depth = np.full((HEIGHT, WIDTH), 3000, np.uint16)  # a wall at 3 m
    depth[10:30, 10:30] = 1000
    depth[40:50, 50:60] = 0  # no reading under object 2
    return labels, depth


def test_stage_measures_and_reports_each_problem():
    warnings = Warnings()
    stage = Objects3DStage(Objects3DConfig(), tolerance_sec=0.01, buffer_size=4, warn=warnings)
    labels, depth = scene()
    stamp = 1_700_000_000 * 10**9
    assert stage.measure(labels, [1, 2], stamp).frame_status == 'no_depth_frame'
    stage.add_depth(numpy_to_image(depth, '16UC1', header(stamp)))
    assert stage.measure(labels, [1, 2], stamp).frame_status == 'no_camera_info'
    stage.set_camera_info(camera_info(k=[0.0] * 9))
    assert stage.measure(labels, [1, 2], stamp).frame_status == 'no_camera_info'
    stage.set_camera_info(camera_info())
    frame = stage.measure(labels, [1, 2, 3], stamp)
    assert frame.frame_status is None and frame.depth_stamp_ns == stamp
    assert [frame.positions[v].status for v in (1, 2, 3)] == ['ok', 'no_depth_points', 'absent']
    # the square's middle is (19.5, 19.5) (integer coordinates are pixel centres, as in K;
    # each point lies somewhere in its pixel: within 0.2 mm here)
    assert frame.positions[1].centroid == pytest.approx([(19.5 - 40) / 100, (19.5 - 30) / 100,
                                                         1.0], abs=0.002)
    assert stage.measure(labels, [1], stamp + 50_000_000).frame_status == 'no_depth_frame'
    assert stage.measure(labels, [1], stamp - 50_000_000).frame_status == 'no_depth_frame'
    stage.add_depth(numpy_to_image(depth[:, :40], '16UC1', header(stamp + 10**9)))
    assert stage.measure(labels, [1], stamp + 10**9).frame_status == 'bad_depth_frame'
    stage.add_depth(numpy_to_image(labels, 'mono8', header(stamp + 2 * 10**9)))
    assert stage.measure(labels, [1], stamp + 2 * 10**9).frame_status == 'bad_depth_frame'
    assert warnings.kinds == ['depth_missing', 'camera_info_missing', 'camera_info_invalid',
                              'depth_no_points', 'depth_stale', 'depth_future', 'depth_size',
                              'depth_encoding']
    assert [rejected for kind, _, rejected in warnings.calls if kind == 'depth_no_points'] \
        == [False]  # an object without readings is a poorer result, not a rejected input
    assert '0.050 s newer' in warnings.calls[5][1]
    counts = dict(stage.diagnostic_values({'depth_size': 1, 'image_encoding': 4}))
    assert counts == {'3D: frames measured': 1, '3D: frames without 3D': 7,
                      '3D: objects located': 1, '3D: depth_size': 1}


def test_messages_of_a_measured_frame():
    warnings = Warnings()
    stage = Objects3DStage(Objects3DConfig(erosion_px=0), 0.01, 4, warnings)
    labels, depth = scene()
    stamp = 1_700_000_000 * 10**9
    stage.add_depth(numpy_to_image(depth, '16UC1', header(stamp + 3_000_000)))
    stage.set_camera_info(camera_info())
    frame = stage.measure(labels, [1, 2, 3], stamp)
    ids = {1: 'cup', 2: 'hand', 3: 'tool'}
    msg = objects_3d_message(frame, ids, header(stamp))
    assert msg.header.stamp.nanosec == 0 and msg.depth_stamp.nanosec == 3_000_000
    cup, hand, tool = msg.objects
    assert (cup.id, cup.mask_value, cup.has_position, cup.status, cup.valid_points) == (
        'cup', 1, True, Object3D.STATUS_OK, 400)
    assert cup.position.z == pytest.approx(1.0)
    assert (cup.bbox.size.x, cup.bbox.size.y) == pytest.approx((0.2, 0.2), abs=0.02)
    assert cup.bbox.center.orientation.w == 1.0
    assert (hand.has_position, hand.status) == (False, Object3D.STATUS_NO_DEPTH_POINTS)
    assert (tool.has_position, tool.status) == (False, Object3D.STATUS_ABSENT)
    failed = objects_3d_message(stage.measure(labels, [1, 2], stamp + 10**9), ids,
                                header(stamp))
    assert [o.status for o in failed.objects] == [Object3D.STATUS_NO_DEPTH_FRAME] * 2

    cloud = cloud_message(frame, header(stamp), max_points=150)
    assert isinstance(cloud, PointCloud2)
    assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [
        ('x', 0, 7), ('y', 4, 7), ('z', 8, 7), ('mask_value', 12, 6)]
    points = np.frombuffer(bytes(cloud.data), np.dtype([('x', '<f4'), ('y', '<f4'),
                                                        ('z', '<f4'), ('v', '<u4')]))
    assert 0 < len(points) == cloud.width <= 150 and cloud.row_step == 16 * cloud.width
    assert set(points['v']) == {1} and np.allclose(points['z'], 1.0)

    markers = markers_message(frame, ids, header(stamp)).markers
    assert markers[0].action == Marker.DELETEALL
    box, label = markers[1:]
    assert (box.type, box.id, label.type, label.text) == (Marker.CUBE, 1,
                                                          Marker.TEXT_VIEW_FACING, 'cup')
    red, green, blue = PALETTE[1] / 255.0
    assert (box.color.r, box.color.g, box.color.b) == pytest.approx((red, green, blue))
    assert box.scale.z == pytest.approx(0.01)  # a flat face still shows
    assert label.pose.position.y < box.pose.position.y - box.scale.y / 2  # above the box
