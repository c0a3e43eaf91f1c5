"""The node's 3D output over real DDS: depth + CameraInfo in, defvos/objects_3d out.

Harness: test/ros_harness.py (a real DefvosNode, rmw_fastrtps_cpp on loopback). Three
scenes:
- synthetic, with known geometry (a box face at 1 m in front of a wall at 2.5 m holding a
  poster, a known K): each frame is a seed frame, so the published mask is the seed and the
  3D figures are checked against the geometry (centroids within 1 cm, extents within 2 cm),
  in 16UC1 millimetres and in 32FC1 metres with holes and stray readings; the cloud and the
  markers are checked too;
- the sample clip tracked with a synthetic depth (the bear 1 m nearer than the wall, depth
  stamps 3 ms off): one Object3DArray per mask, stamps and frame id kept;
- every bad input: no depth yet, a future or stale depth stamp, no / zero / mismatched
  CameraInfo, depth of another size or encoding, no reading under the object. Each frame
  still gets its mask and objects, the 3D output says why there is no position, and each
  case is warned about and counted on /diagnostics.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from defvos_interfaces.msg import Object3D, Object3DArray
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from visualization_msgs.msg import Marker, MarkerArray

from defvos_core.depth.stamp_matcher import MATCHED
from defvos_core.overlay import PALETTE
from defvos_ros.image_conversion import numpy_to_image
from defvos_ros.ros_helpers import stamp_to_ns
from ros_harness import RELIABLE, _names, header, labels_of, next_stamp, wait_until

HEIGHT, WIDTH = 240, 320
FX, FY, CX, CY = 250.0, 260.0, 159.5, 119.5
K = [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]


class DepthClient:
    """Publishes depth and CameraInfo to a node; records its 3D outputs by stamp."""

    def __init__(self, ros, node, depth_topic: str = 'depth',
                 camera_info_topic: str = 'camera_info') -> None:
        self.node = node
        prefix = node.get_namespace().rstrip('/')
        self.ros_node = ros.add(Node(f'test_depth_client_{next(_names)}', context=ros.context))
        self.depth_pub = self.ros_node.create_publisher(Image, f'{prefix}/{depth_topic}',
                                                        RELIABLE)
        self.info_pub = self.ros_node.create_publisher(CameraInfo,
                                                       f'{prefix}/{camera_info_topic}', RELIABLE)
        self.objects: dict[int, Object3DArray] = {}
        self.clouds: dict[int, PointCloud2] = {}
        self.markers: dict[int, MarkerArray] = {}
        self._lock = threading.Lock()
        for kind, topic, store in ((Object3DArray, f'{prefix}/defvos/objects_3d', self.objects),
                                   (PointCloud2, f'{prefix}/defvos/objects_cloud', self.clouds),
                                   (MarkerArray, f'{prefix}/defvos/objects_markers',
                                    self.markers)):
            self.ros_node.create_subscription(kind, topic, self._keeper(store), RELIABLE)
        self.statuses = []
        self.ros_node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics,
                                          10)
        assert wait_until(lambda: (self.depth_pub.get_subscription_count() > 0
                                   and self.info_pub.get_subscription_count() > 0
                                   and node.objects_3d_pub.get_subscription_count() > 0
                                   and node.cloud_pub.get_subscription_count() > 0
                                   and node.markers_pub.get_subscription_count() > 0))

    def _keeper(self, store: dict):
        def keep(msg) -> None:
            stamp = (stamp_to_ns(msg.markers[0].header.stamp) if isinstance(msg, MarkerArray)
                     else stamp_to_ns(msg.header.stamp))
            with self._lock:
                store[stamp] = msg
        return keep

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        self.statuses += [s for s in msg.status if s.name == f'{self.node.get_name()}: tracking']

    def send_depth(self, depth: np.ndarray, stamp: int, encoding: str = '16UC1') -> None:
        """Publish a depth image and wait until the node holds it."""
        held = self.node.objects_3d.depth_frames
        self.depth_pub.publish(numpy_to_image(depth, encoding, header(stamp)))
        assert wait_until(lambda: held.match(stamp, 0).outcome == MATCHED), \
            'the node did not receive the depth image'

    def send_info(self, k=K, width=WIDTH, height=HEIGHT) -> None:
        """Publish a CameraInfo and wait until the node uses it."""
        msg = CameraInfo(header=header(next_stamp()), width=width, height=height, k=k)
        self.info_pub.publish(msg)
        assert wait_until(lambda: self.node.objects_3d.camera_info == msg)

    def objects_for(self, stamp: int) -> Object3DArray:
        assert wait_until(lambda: stamp in self.objects), f'no objects_3d stamped {stamp}'
        return self.objects[stamp]

    def diagnostics(self, predicate) -> dict[str, str]:
        """Wait for a /diagnostics status whose values satisfy ``predicate``; return them."""
        def found():
            return [values for values in ({v.key: v.value for v in s.values}
                                          for s in list(self.statuses)) if predicate(values)]
        assert wait_until(found, 10.0), self.statuses[-1:] or 'no /diagnostics status'
        return found()[-1]


def synthetic_scene(rng: np.random.Generator):
    """Return (rgb, labels, depth_m, truth): a box face at 1 m, a poster on a wall at 2.5 m.

    truth: mask value -> (centre (x, y, z), size (x, y, z)) in metres, optical frame.
    """
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)

    def face(x0, x1, y0, y1, z):
        x, y = (u - CX) * z / FX, (v - CY) * z / FY
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)

    box = face(-0.30, -0.05, -0.10, 0.15, 1.0)
    poster = face(0.10, 0.60, -0.40, 0.10, 2.5) & ~box
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    labels[box], labels[poster] = 1, 2
    depth = np.full((HEIGHT, WIDTH), 2.5, np.float32)
    depth[box] = 1.0
    rgb = (100 + 40 * rng.random((HEIGHT, WIDTH, 3))).astype(np.uint8)
    rgb[box], rgb[poster] = (200, 60, 40), (40, 90, 200)
    truth = {1: ((-0.175, 0.025, 1.0), (0.25, 0.25, 0.0)),
             2: ((0.35, -0.15, 2.5), (0.5, 0.5, 0.0))}
    return rgb, labels, depth, truth


def test_a_synthetic_scene_of_known_geometry(ros, pipeline):
    rng = np.random.default_rng(0)
    rgb, labels, depth_m, truth = synthetic_scene(rng)
    node, client = pipeline(depth_topic='depth')
    assert node.camera_info_topic == f'{node.get_namespace()}/camera_info'  # beside the depth
    depth = DepthClient(ros, node)
    depth.send_info()
    noisy = depth_m.copy()  # 32FC1 with no-reading holes (0 and NaN) and stray far readings
    holes = rng.random(noisy.shape) < 0.15
    noisy[holes] = rng.choice([0.0, np.nan], size=int(holes.sum()))
    noisy[rng.random(noisy.shape) < 0.005] = 9.0
    millimetres = np.round(depth_m * 1000).astype(np.uint16)
    for image, encoding in ((millimetres, '16UC1'), (noisy, '32FC1')):
        assert client.reset().success  # each frame is a seed frame: its mask is the seed
        stamp = next_stamp()
        depth.send_depth(image, stamp + 2_000_000, encoding)  # 2 ms off: paired
        client.send_frame(rgb, stamp)
        client.send_seed(labels, stamp)
        assert np.array_equal(labels_of(client.wait_mask(stamp)), labels)
        msg = depth.objects_for(stamp)
        assert (msg.header.frame_id, stamp_to_ns(msg.depth_stamp)) == ('test_camera',
                                                                       stamp + 2_000_000)
        assert [(o.id, o.mask_value, o.has_position, o.status) for o in msg.objects] == [
            ('1', 1, True, Object3D.STATUS_OK), ('2', 2, True, Object3D.STATUS_OK)]
        for item in msg.objects:
            centre, size = truth[item.mask_value]
            position = (item.position.x, item.position.y, item.position.z)
            assert position == pytest.approx(centre, abs=0.01), (encoding, item.id)
            box = item.bbox
            assert (box.center.position.x, box.center.position.y,
                    box.center.position.z) == pytest.approx(centre, abs=0.01)
            assert (box.size.x, box.size.y, box.size.z) == pytest.approx(size, abs=0.02), \
                (encoding, item.id)
            area = np.count_nonzero(labels == item.mask_value)
            assert 0.5 * area < item.valid_points < area  # the rim and the holes left out

        assert wait_until(lambda: stamp in depth.clouds and stamp in depth.markers)
        cloud = depth.clouds[stamp]
        points = np.frombuffer(bytes(cloud.data), np.dtype(
            [('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('value', '<u4')]))
        assert 0 < cloud.width <= 5000 and cloud.header.frame_id == 'test_camera'
        for value, (centre, _) in truth.items():
            mine = points[points['value'] == value]
            assert len(mine) > 100 and np.median(mine['z']) == pytest.approx(centre[2],
                                                                             abs=0.01)
        boxes = [m for m in depth.markers[stamp].markers if m.type == Marker.CUBE]
        assert [m.id for m in boxes] == [1, 2]
        for marker in boxes:
            colour = PALETTE[marker.id] / 255.0
            assert (marker.color.r, marker.color.g, marker.color.b) == pytest.approx(colour)


def bear_depth(mask: np.ndarray) -> np.ndarray:
    """Return a 16UC1 depth: a wall at 3 m, the bear's ground-truth region at 2 m."""
    depth = np.full(mask.shape, 3000, np.uint16)
    depth[mask > 0] = 2000
    return depth


def test_the_sample_clip_is_tracked_in_3d_with_its_stamps(ros, pipeline, clip):
    frames, truth = clip
    frames, truth = frames[:12], truth[:12]
    node, client = pipeline(depth_topic='depth', depth_wait_sec=5.0)
    depth = DepthClient(ros, node)
    height, width = frames[0].shape[:2]
    depth.send_info(k=[300.0, 0, width / 2, 0, 300.0, height / 2, 0, 0, 1], width=width,
                    height=height)
    stamps = [next_stamp() for _ in frames]
    received = []
    for index, (frame, mask, stamp) in enumerate(zip(frames, truth, stamps)):
        late = index == 5  # this frame's depth comes after its mask: the 3D step waits for it
        if not late:
            depth.send_depth(bear_depth(mask), stamp + 3_000_000)  # 3 ms off: still its pair
        client.send_frame(frame, stamp)
        if index == 0:
            client.send_seed(truth[0], stamp)
        received.append(labels_of(client.wait_mask(stamp)))
        if late:
            assert stamp not in depth.objects
            depth.send_depth(bear_depth(mask), stamp + 3_000_000)
    for labels, mask, stamp in zip(received, truth, stamps):
        msg = depth.objects_for(stamp)
        assert stamp_to_ns(msg.header.stamp) == stamp and msg.header.frame_id == 'test_camera'
        assert stamp_to_ns(msg.depth_stamp) == stamp + 3_000_000
        (item,) = msg.objects
        assert (item.id, item.mask_value, item.has_position) == ('1', 1, True)
        # the bear is at 2 m: the median ignores what the tracked mask spills onto the wall
        assert item.position.z == pytest.approx(2.0, abs=0.01)
        # the bear's pixels the tracker covered (those at 2 m under the mask it published)
        rows, cols = np.nonzero(mask & (labels == 1))
        expected_x = (np.median(cols) - width / 2) * 2.0 / 300.0
        assert item.position.x == pytest.approx(expected_x, abs=0.05)
        assert item.valid_points > 0.5 * np.count_nonzero(labels == 1)


def test_bad_depth_input_keeps_the_masks_and_says_why(ros, pipeline, clip):
    frames, truth = clip
    node, client = pipeline(depth_topic='camera/depth', camera_info_topic='camera/info')
    depth = DepthClient(ros, node, 'camera/depth', 'camera/info')
    height, width = frames[0].shape[:2]
    good_k = [300.0, 0, width / 2, 0, 300.0, height / 2, 0, 0, 1]
    stamps = iter([next_stamp() for _ in range(12)])
    statuses = []

    def frame(index: int, before=None) -> Object3DArray:
        """Send frame ``index`` (after ``before(stamp)``); check its 2D outputs; return its 3D."""
        stamp = next(stamps)
        if before is not None:
            before(stamp)
        client.send_frame(frames[index], stamp)
        if index == 0:
            client.send_seed(truth[0], stamp)
        assert np.any(labels_of(client.wait_mask(stamp)) == 1)  # the 2D output carries on
        assert client.objects_for(stamp).objects[0].present
        msg = depth.objects_for(stamp)
        statuses.append([(o.has_position, o.status) for o in msg.objects])
        return msg

    none = (False, Object3D.STATUS_NO_DEPTH_FRAME)
    frame(0)  # no depth received yet
    frame(1, lambda s: depth.send_depth(bear_depth(truth[1]), s + 500_000_000))  # future
    frame(2, lambda s: depth.send_depth(bear_depth(truth[2]), s))  # no CameraInfo yet
    depth.send_info(k=[0.0] * 9, width=width, height=height)  # an uncalibrated camera
    frame(3, lambda s: depth.send_depth(bear_depth(truth[3]), s))
    depth.send_info(k=good_k, width=640, height=480)  # calibrated for another size
    frame(4, lambda s: depth.send_depth(bear_depth(truth[4]), s))
    depth.send_info(k=good_k, width=width, height=height)
    frame(5, lambda s: depth.send_depth(bear_depth(truth[5])[:, :200], s))  # another size
    frame(6, lambda s: depth.send_depth(frames[6], s, 'rgb8'))  # not a depth encoding
    frame(7)  # no depth for this frame: the nearest is 40 ms older (stale)
    frame(8, lambda s: depth.send_depth(np.zeros((height, width), np.uint16), s))  # no reading
    located = frame(9, lambda s: depth.send_depth(bear_depth(truth[9]), s))  # recovered
    bad_frame = (False, Object3D.STATUS_BAD_DEPTH_FRAME)
    no_info = (False, Object3D.STATUS_NO_CAMERA_INFO)
    assert statuses == [[none], [none], [no_info], [no_info], [no_info], [bad_frame],
                        [bad_frame], [none], [(False, Object3D.STATUS_NO_DEPTH_POINTS)],
                        [(True, Object3D.STATUS_OK)]]
    assert located.objects[0].position.z == pytest.approx(2.0, abs=0.01)
    kinds = ('depth_missing', 'depth_future', 'camera_info_missing', 'camera_info_invalid',
             'camera_info_size', 'depth_size', 'depth_encoding', 'depth_stale',
             'depth_no_points')
    assert {kind: node.warnings.counts[kind] for kind in kinds} == dict.fromkeys(kinds, 1)
    for kind, text in (('depth_missing', 'no depth image received yet'),
                       ('depth_future', '0.500 s newer'),
                       ('camera_info_invalid', 'uncalibrated camera publishes K = 0'),
                       ('camera_info_size', 'CameraInfo is for 640x480 images'),
                       ('depth_size', 'depth image is 200x240'),
                       ('depth_encoding', "depth encoding 'rgb8' is not supported"),
                       ('depth_stale', '0.040 s older'),
                       ('depth_no_points', "objects ['1'] have fewer than depth_min_points")):
        ros.wait_log(node.get_logger().name, f'[{kind}]')
        assert ros.log_messages(node.get_logger().name, text), kind
    counts = depth.diagnostics(lambda v: v.get('3D: frames measured') == '2')
    assert counts['3D: frames without 3D'] == '8' and counts['3D: objects located'] == '1'
    assert all(counts[f'3D: {kind}'] == '1' for kind in kinds), counts

    def fault(*args):
        raise ZeroDivisionError('a fault inside the 3D step')

    node.objects_3d.measure = fault  # an unexpected error: warned, the masks stay counted
    stamp = next(stamps)
    depth.send_depth(bear_depth(truth[10]), stamp)
    client.send_frame(frames[10], stamp)
    assert np.any(labels_of(client.wait_mask(stamp)) == 1)
    assert wait_until(lambda: node.warnings.counts['objects_3d_error'] == 1)
    assert ros.wait_log(node.get_logger().name, '[objects_3d_error]').startswith(
        '3D positions failed: ZeroDivisionError')
    assert node.stats.dropped['error'] == 0


def test_without_a_depth_topic_nothing_3d_exists(ros, pipeline, clip):
    frames, truth = clip
    node, client = pipeline()
    assert node.objects_3d is None
    prefix = node.get_namespace()
    assert node.count_publishers(f'{prefix}/defvos/objects_3d') == 0
    assert node.count_subscribers(f'{prefix}/camera_info') == 0
    stamp = next_stamp()
    assert len(client.track(frames[:1], truth[0], [stamp])) == 1
