"""Integration tests of the defvos node, player and recorder over real DDS.

Tracking, seeds, bad input, real-time behaviour, parameters (harness: test/ros_harness.py).

Tracking-quality threshold (test_tracks_the_sample_clip_over_dds). The node must reproduce
the bare Tracker run offline on the same frames with the same weights and settings (IoU of
each object >= 0.95 on every frame) AND its masks must have a mean IoU against the clip's
ground truth of at least max(offline_iou - 0.1, offline_iou / 2), offline_iou being computed
in the test: an empty or wrong mask stream fails whatever the weights.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import String

from defvos_core.build import build_tracker
from defvos_core.config import TrackerConfig
from defvos_core.data.masks import read_label_map, write_label_map
from defvos_core.evaluation.metrics import region_jaccard
from defvos_core.overlay import overlay
from defvos_ros.image_conversion import image_to_rgb, numpy_to_image, rgb_to_compressed
from defvos_ros.node import StartupError
from defvos_ros.parameters import (SPECS, NodeSettings, parameter_defaults,
                                   tracker_config_from)
from defvos_ros.play import Player
from defvos_ros.recorder import Recorder
from defvos_ros.ros_helpers import stamp_to_ns
from defvos_ros.stats import PeriodReader, PipelineStats
from ros_harness import (DOMAIN_ID, MASK_TIMEOUT, RELIABLE, REPO, SIZE, _names, encode,
                         header, labels_of, next_stamp, object_iou, offline_labels,
                         slow_model, start_node, wait_until)


# ----------------------------------------------------------------------------- tracking
def test_tracks_the_sample_clip_over_dds(ros, pipeline, clip):
    frames, truth = clip
    node, client = pipeline(namespace='')  # root namespace: the default names
    assert node.masks_pub.topic_name == '/defvos/masks'
    assert node.objects_pub.topic_name == '/defvos/objects'
    stamps = [next_stamp() for _ in frames]
    received = client.track(frames, truth[0], stamps)

    for stamp, labels in zip(stamps, received):
        msg = client.masks[stamp]
        assert stamp_to_ns(msg.header.stamp) == stamp  # copied from the input, never now()
        assert msg.header.frame_id == 'test_camera'
        assert (msg.height, msg.width) == frames[0].shape[:2]
        assert 0 < np.count_nonzero(labels == 1) < labels.size  # non-trivial
        assert set(np.unique(labels)) <= {0, 1}

    expected = offline_labels(frames, truth[0])
    ious = [object_iou(a, b) for a, b in zip(received, expected)]
    assert min(ious) >= 0.95, ious  # the node reproduces the bare tracker, on the object
    node_iou = np.mean([region_jaccard(m == 1, t == 1) for m, t in zip(received[1:], truth[1:])])
    offline_iou = np.mean([region_jaccard(m == 1, t == 1)
                           for m, t in zip(expected[1:], truth[1:])])
    threshold = max(offline_iou - 0.1, offline_iou / 2)
    assert node_iou >= threshold, (node_iou, offline_iou)

    objects = client.objects_for(stamps[-1])  # the per-object message of the last frame
    assert objects.header.frame_id == 'test_camera'
    (item,) = objects.objects
    assert (item.id, item.mask_value, item.present, item.frames_since_seen) == ('1', 1, True, 0)
    assert 0.0 < item.score <= 1.0
    assert item.area_fraction == pytest.approx(np.mean(received[-1] == 1), abs=1e-6)
    rows, cols = np.nonzero(received[-1] == 1)
    assert (item.bbox.size_x, item.bbox.size_y) == (cols.max() + 1 - cols.min(),
                                                    rows.max() + 1 - rows.min())
    assert item.bbox.center.position.x == pytest.approx((cols.min() + cols.max() + 1) / 2)


def test_namespaced_node_publishes_under_its_namespace(ros, pipeline, clip):
    frames, truth = clip
    node, client = pipeline(namespace='robot1')
    assert node.masks_pub.topic_name == '/robot1/defvos/masks'
    assert node.overlay_pub.topic_name == '/robot1/defvos/overlay'
    assert node.image_topic == '/robot1/image'
    stamps = [next_stamp() for _ in range(2)]
    received = client.track(frames[:2], truth[0], stamps)
    assert object_iou(received[1], truth[1]) >= 0.5  # tracked, not just echoed
    assert client.reset().success


def test_onnxruntime_backend_gets_the_providers(ros, pipeline, clip):
    from defvos_core.onnx import providers as providers_module

    frames, truth = clip
    node, client = pipeline(backend='onnxruntime', providers=['cpu'])
    assert node.tracker.backend.name == 'onnxruntime'
    assert node.tracker.backend.providers == providers_module.select_providers(['cpu'])
    received = client.track(frames[:3], truth[0], [next_stamp() for _ in range(3)])
    expected = offline_labels(frames[:3], truth[0])
    assert all(object_iou(a, b) >= 0.95 for a, b in zip(received[1:], expected[1:]))


def test_all_image_encodings_and_padded_rows_are_tracked(ros, pipeline, clip):
    frames, truth = clip
    frames = [frame[:, :426] for frame in frames[:9]]  # 4:2:2 needs an even width
    seed = truth[0][:, :426]
    node, client = pipeline()
    stamp0 = next_stamp()
    client.send_frame(frames[0], stamp0)
    client.send_seed(seed, stamp0)
    received = [labels_of(client.wait_mask(stamp0))]
    messages = []
    for frame, encoding in zip(frames[1:], ('bgr8', 'mono8', 'rgba8', 'bgra8', 'yuv422',
                                            'yuv422_yuy2', 'rgb8')):
        messages.append(numpy_to_image(encode(frame, encoding), encoding, header(next_stamp())))
    padded = numpy_to_image(frames[8], 'rgb8', header(next_stamp()))  # step with padding
    rows = np.frombuffer(padded.data, np.uint8).reshape(padded.height, -1)
    padded.step = padded.width * 3 + 13
    padded.data = np.hstack([rows, np.full((padded.height, 13), 77, np.uint8)]).tobytes()
    messages.append(padded)
    for msg in messages:
        client.send(msg)
        received.append(labels_of(client.wait_mask(stamp_to_ns(msg.header.stamp))))
    # Reference: the bare tracker over the same messages, decoded the same way.
    expected = offline_labels([frames[0]] + [image_to_rgb(m) for m in messages], seed)
    for encoding, mine, theirs in zip(['rgb8', 'bgr8', 'mono8', 'rgba8', 'bgra8', 'yuv422',
                                       'yuv422_yuy2', 'rgb8', 'rgb8+padding'],
                                      received, expected):
        assert mine.shape == (240, 426), encoding
        assert object_iou(mine, theirs) >= 0.95, encoding


def test_compressed_images_and_a_corrupt_one(ros, pipeline, clip):
    frames, truth = clip
    node, client = pipeline(compressed=True)
    assert node.image_topic.endswith('/image/compressed')
    stamp0 = next_stamp()
    client.send(rgb_to_compressed(frames[0], 'png', header(stamp0)))
    client.send_seed(truth[0], stamp0)
    client.wait_mask(stamp0)
    corrupt = rgb_to_compressed(frames[1], 'jpeg', header(next_stamp()))
    corrupt.data = bytes(corrupt.data)[:200]  # truncated JPEG
    client.send(corrupt)
    ros.wait_log(node.get_logger().name, 'could not decode CompressedImage')
    assert node.warnings.counts['compressed'] == 1
    stamp = next_stamp()
    client.send(rgb_to_compressed(frames[2], 'jpeg', header(stamp)))
    assert labels_of(client.wait_mask(stamp)).shape == (240, 427)


# -------------------------------------------------------------------------------- seeds
def test_late_seed_is_paired_with_its_frame_by_stamp(ros, pipeline, clip):
    frames, truth = clip
    node, client = pipeline()
    stamps = [next_stamp() for _ in range(7)]
    received, dropped = node.stats.total_received, node.stats.total_dropped
    for frame, stamp in zip(frames[:5], stamps[:5]):
        client.send_frame(frame, stamp)
    # no object yet: every frame is received and dropped, and nothing is published
    assert wait_until(lambda: node.stats.total_received - received == 5
                      and node.stats.total_dropped - dropped == 5)
    assert not set(stamps[:5]) & set(client.masks)
    # The seed of frame 1 arrives after frame 4, its stamp 3 ms off (tolerance 10 ms).
    client.send_seed(truth[1], stamps[1] + 3_000_000)
    seed_mask = client.wait_mask(stamps[1])  # published with FRAME 1's header
    assert seed_mask.header.frame_id == 'test_camera'
    seeded = labels_of(seed_mask)
    received = []
    for frame, stamp in zip(frames[5:7], stamps[5:7]):
        client.send_frame(frame, stamp)
        received.append(labels_of(client.wait_mask(stamp)))
    # The tracker's memory continued from frame 1: same as adding the objects offline there.
    expected = offline_labels([frames[1], frames[5], frames[6]], truth[1])
    assert object_iou(seeded, expected[0]) >= 0.95
    for mine, theirs in zip(received, expected[1:]):
        assert object_iou(mine, theirs) >= 0.95


def test_a_later_seed_adds_and_replaces_objects_and_keeps_the_others(ros, pipeline, clip):
    frames, truth = clip
    node, client = pipeline()
    stamps = [next_stamp() for _ in range(6)]
    received = client.track(frames[:3], truth[0], stamps[:3])
    rock = np.zeros_like(truth[2])
    rock[:40, :60] = 2  # frame 2 again: a seed with only object 2, object 1 is kept
    client.send_seed(rock, stamps[2] + 1)  # 1 ns off: paired with frame 2 (tolerance 10 ms)
    received.append(client.wait_mask_number(stamps[2], 2))  # the seed frame, re-published
    ros.wait_log(node.get_logger().name, "added/replaced ['2'], tracking ['1', '2']")
    for index in (3, 4):
        client.send_frame(frames[index], stamps[index])
        received.append(labels_of(client.wait_mask(stamps[index])))
    assert set(client.last_objects()) == {'1', '2'}
    edge = np.zeros_like(truth[4])
    edge[:, -50:] = 1  # frame 4 again: object 1 replaced by the right edge of the image
    client.send_seed(edge, stamps[4])
    received.append(client.wait_mask_number(stamps[4], 2))
    ros.wait_log(node.get_logger().name, "added/replaced ['1'], tracking ['1', '2']")
    assert np.all(received[-1][:, -50:] == 1)
    client.send_frame(frames[5], stamps[5])
    received.append(labels_of(client.wait_mask(stamps[5])))
    assert set(client.last_objects()) == {'1', '2'}
    # the same calls on the bare tracker: seeds applied at their frames, add or replace
    tracker = build_tracker(None, TrackerConfig(size=SIZE))
    expected = [tracker.add_objects(frames[0], truth[0]).labels, tracker.step(frames[1]).labels,
                tracker.step(frames[2]).labels, tracker.add_objects(frames[2], rock).labels,
                tracker.step(frames[3]).labels, tracker.step(frames[4]).labels,
                tracker.add_objects(frames[4], edge).labels, tracker.step(frames[5]).labels]
    for index, (mine, theirs) in enumerate(zip(received, expected)):
        assert object_iou(mine, theirs) >= 0.95, index


def test_seed_may_arrive_before_its_frame(ros, pipeline, clip):
    frames, truth = clip
    node, client = pipeline(seed_wait_sec=10.0)
    stamp = next_stamp()
    client.send_seed(truth[0], stamp)
    assert wait_until(lambda: node.worker.pending_requests == 1)  # the seed waits for its frame
    client.send_frame(frames[0], stamp)
    assert np.any(labels_of(client.wait_mask(stamp)) == 1)


def test_seed_without_a_matching_frame_is_rejected(ros, pipeline, clip):
    frames, truth = clip
    node, client = pipeline()
    client.send_frame(frames[0], next_stamp())
    client.send_seed(truth[0], next_stamp() - 100 * 10**9)  # older than any buffered frame
    message = ros.wait_log(node.get_logger().name, 'rejected: no frame within')
    assert 'seed_mask' in message and "stamp it with its frame's header.stamp" in message
    # A seed for a frame that never comes is rejected once seed_wait_sec has passed.
    assert node.set_parameters([Parameter('seed_wait_sec', value=0.2)])[0].successful
    client.send_seed(truth[0], next_stamp() + 10**9)
    assert wait_until(lambda: node.warnings.counts['seed_no_frame'] == 2, 5.0)
    assert not node.tracker.object_ids
    stamps = [next_stamp() for _ in range(2)]  # the node is alive and tracks afterwards
    assert len(client.track(frames[:2], truth[0], stamps)) == 2


BAD_SEEDS = {
    # kind: (seed builder from the ground truth, encoding, expected warning text)
    'seed_size': (lambda gt: gt[:100, :100], 'mono8', 'is 100x100 but its frame is 427x240'),
    'seed_too_many': (lambda gt: np.arange(gt.size).reshape(gt.shape) % 6, 'mono8',
                      'max_objects is 4'),
    'seed_empty': (lambda gt: np.zeros_like(gt), 'mono8', 'no object (every pixel is 0)'),
    'seed_invalid': (lambda gt: np.dstack([gt] * 3), 'rgb8',
                     'label map must have one of the encodings'),
    'seed_ids': (lambda gt: gt.astype(np.uint16) * 300, 'mono16', 'object ids must be in'),
}


@pytest.mark.parametrize('kind', sorted(BAD_SEEDS))
def test_bad_seed_is_rejected_and_the_node_keeps_tracking(ros, pipeline, clip, kind):
    frames, truth = clip
    build, encoding, text = BAD_SEEDS[kind]
    node, client = pipeline()
    stamps = [next_stamp() for _ in range(2)]
    client.track(frames[:2], truth[0], stamps)
    bad_stamp = next_stamp()
    client.send_frame(frames[2], bad_stamp)
    client.wait_mask(bad_stamp)
    client.send_seed(build(truth[2]), bad_stamp, encoding)
    message = ros.wait_log(node.get_logger().name, text)
    assert 'seed_mask' in message
    assert node.warnings.counts[kind] == 1
    assert node.tracker.object_ids == [1]  # the bad seed changed nothing
    assert client.step(frames[3]).shape == (240, 427)  # and tracking goes on


def _short_data(frame, stamp):
    msg = numpy_to_image(frame, 'rgb8', header(stamp))
    msg.data = bytes(msg.data)[:1000]
    return msg


def _empty(frame, stamp):
    msg = Image(header=header(stamp), encoding='rgb8', height=0, width=0, step=0)
    return msg


def _unsupported(frame, stamp):
    height, width = frame.shape[:2]
    return Image(header=header(stamp), height=height, width=width, encoding='32FC1',
                 step=width * 4, data=np.zeros(height * width, np.float32).tobytes())


BAD_FRAMES = {
    'image_encoding': (_unsupported, "unsupported image encoding '32FC1'"),
    'image_data': (_short_data, 'expected step*height'),
    'image_empty': (_empty, 'image is empty'),
    'frame_size': (lambda frame, stamp: numpy_to_image(frame[:120, :200], 'rgb8',
                                                       header(stamp)), 'frame size changed'),
}


@pytest.mark.parametrize('kind', sorted(BAD_FRAMES))
def test_bad_frame_is_dropped_with_a_throttled_warning(ros, pipeline, clip, kind):
    frames, truth = clip
    build, text = BAD_FRAMES[kind]
    node, client = pipeline()
    client.track(frames[:2], truth[0], [next_stamp() for _ in range(2)])
    bad_stamps = [next_stamp() for _ in range(3)]
    for count, stamp in enumerate(bad_stamps, start=1):
        client.send(build(frames[2], stamp))
        assert wait_until(lambda: node.warnings.counts[kind] == count, 10.0)
    message = ros.wait_log(node.get_logger().name, text)
    assert 'dropped' in message
    assert all(stamp not in client.masks for stamp in bad_stamps)
    assert client.step(frames[3]).shape == (240, 427)  # the node is alive and publishing
    # three bad frames, one warning (throttled); the reset's log line arrives after every
    # line the node logged before it (one /rosout publisher, reliable, in order)
    assert client.reset().success
    ros.wait_log(node.get_logger().name, 'reset: cleared')
    assert len(ros.log_messages(node.get_logger().name, text)) == 1


def test_missing_weights_fail_start_up_with_a_clear_message(tmp_path):
    missing = tmp_path / 'no_such_student.pt'
    run = subprocess.run([sys.executable, '-m', 'defvos_ros', '--ros-args', '-p',
                          f'weights:={missing}'], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert f'weights file not found: {missing}' in run.stderr
    assert "parameter 'weights'" in run.stderr


def test_invalid_parameters_fail_start_up(ros):
    with pytest.raises(StartupError, match="parameter 'backend' is 'tensorrt'"):
        start_node(ros, 'bad_backend', backend='tensorrt')
    with pytest.raises(StartupError, match='out of range'):
        start_node(ros, 'bad_size', size=100000)
    with pytest.raises(StartupError, match='exclusive'):
        start_node(ros, 'two_precisions', fp16=True, bf16=True)


# ------------------------------------------------------------------ real time, overlay
def test_stale_frames_are_dropped_and_the_newest_is_processed(ros, pipeline, clip):
    frames, truth = clip
    node, client = pipeline(summary_period_sec=0.5)
    client.track(frames[:2], truth[0], [next_stamp() for _ in range(2)])
    received, processed = node.stats.total_received, node.stats.total_processed
    dropped = node.stats.total_dropped
    burst = [next_stamp() for _ in range(12)]
    with slow_model(node) as started:  # a model slower than the camera
        client.send_frame(frames[2], burst[0])
        assert started.wait(MASK_TIMEOUT)  # the worker holds frame 0 of the burst
        for frame, stamp in zip(frames[3:14], burst[1:]):
            client.send_frame(frame, stamp)  # returns once the node's callback has it
    client.wait_mask(burst[-1])  # the newest frame is always processed
    assert wait_until(lambda: node.stats.total_processed - processed
                      + node.stats.total_dropped - dropped
                      == node.stats.total_received - received)
    # every frame that reached the node was segmented or counted as dropped, and only the
    # frame already taken when inference was held up plus the newest one were segmented
    assert node.stats.total_received - received == 12
    assert node.stats.total_processed - processed == 2
    assert node.stats.dropped['stale'] >= 10
    assert [stamp in client.masks for stamp in burst] == [True] + [False] * 10 + [True]
    summary = ros.wait_log(node.get_logger().name, 'stale ')  # the periodic summary line
    assert 'fps (input' in summary and 'latency' in summary


def test_overlay_only_while_subscribed_and_enabled(ros, pipeline, clip):
    frames, truth = clip
    node, client = pipeline()
    client.track(frames[:2], truth[0], [next_stamp() for _ in range(2)])
    assert node.overlays_published == 0  # nobody subscribed: not computed
    client.subscribe_overlay()
    stamp = next_stamp()
    client.send_frame(frames[2], stamp)
    labels = labels_of(client.wait_mask(stamp))
    assert wait_until(lambda: stamp in client.overlays)
    msg = client.overlays[stamp]
    assert msg.encoding == 'rgb8' and msg.header.frame_id == 'test_camera'
    assert np.array_equal(image_to_rgb(msg), overlay(frames[2], labels, names={1: '1'}))
    assert node.set_parameters([Parameter('overlay', value=False)])[0].successful
    count = node.overlays_published
    client.step(frames[3])
    assert node.overlays_published == count


# --------------------------------------------------------------------------- parameters
def test_parameters_have_descriptors_and_yaml_lists_them_all(ros, pipeline):
    node, _ = pipeline()
    names = [name for name in SPECS]
    descriptors = node.describe_parameters(names)
    for name, descriptor in zip(names, descriptors):
        assert descriptor.description, name
    assert node.describe_parameters(['size'])[0].integer_range[0].to_value == 4096
    assert node.describe_parameters(['size'])[0].read_only
    refused = node.set_parameters([Parameter('size', value=200)])[0]
    assert not refused.successful  # read-only at run time
    assert not node.set_parameters([Parameter('max_objects', value=0)])[0].successful
    assert node.set_parameters([Parameter('max_objects', value=7)])[0].successful
    assert node.settings.max_objects == 7
    config = yaml.safe_load((REPO / 'config' / 'defvos.yaml').read_text())
    values = config['/**']['ros__parameters']
    defaults = parameter_defaults()
    assert set(values) == set(SPECS) == set(defaults)
    for name, value in values.items():
        assert value == defaults[name], name
    # one source: the tracker's parameters are TrackerConfig's fields and defaults
    assert tracker_config_from(values) == TrackerConfig() == NodeSettings().tracker
    assert node.settings.tracker == TrackerConfig(size=SIZE)  # the test's override arrived


def test_stats_periods_and_drop_reasons():
    stats = PipelineStats()
    reader = PeriodReader(stats, now=100.0)
    for latency in (0.01, 0.02, 0.03, 0.04):
        stats.frame_received()
        stats.frame_processed(latency)
    stats.frame_received()
    stats.frame_dropped('stale')
    with pytest.raises(ValueError, match='unknown drop reason'):
        stats.frame_dropped('lost')
    summary = reader.read(objects=2, now=102.0)
    assert (summary.frames_received, summary.frames_processed, summary.frames_dropped) \
        == (5, 4, 1)
    assert summary.dropped == {'stale': 1}
    assert summary.fps_out == pytest.approx(2.0)
    assert summary.latency_p50_ms == pytest.approx(25.0)
    assert 'dropped 1 (stale 1) (total 1)' in summary.format()
    assert reader.read().frames_received == 0  # a new period starts
    assert PeriodReader(stats).read().frames_received == 0  # readers are independent


# ---------------------------------------------------------------- player, recorder, demo
def test_player_late_seed_in_lockstep_with_the_node(ros, pipeline, clip):
    frames, truth = clip
    node, _ = pipeline(namespace='play1')
    player = ros.add(Player('/play1/image', '/play1/seed_mask', 'cam',
                            wait_for='/play1/defvos/masks', context=ros.context))
    assert player.wait_for_subscribers(MASK_TIMEOUT)
    assert wait_until(lambda: node.count_publishers('/play1/image') > 0
                      and node.count_publishers('/play1/seed_mask') > 0)
    named = [(str(i), frame) for i, frame in enumerate(frames[:6])]
    missing = player.play(named, seed=truth[0], rate=10.0, seed_delay=0.25)
    assert player.flush(MASK_TIMEOUT)  # the node acknowledged every frame and the seed
    ros.remove(player)
    assert missing == 0
    assert len(player.sent) == 6
    assert node.warnings.counts == {}
    log = ros.wait_log(node.get_logger().name, 'seed_mask on')
    first_stamp = player.sent[0][1]
    assert f'{first_stamp // 10**9}.{first_stamp % 10**9:09d}' in log  # paired with frame 0


def _write_bag(path: Path, storage: str, stamps: list[int], frames) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    plugin = {'sqlite3': StoragePlugin.SQLITE3, 'mcap': StoragePlugin.MCAP}[storage]
    typestore = get_typestore(Stores.ROS2_KILTED)
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        images = writer.add_connection('/cam/image', 'sensor_msgs/msg/Image',
                                       typestore=typestore)
        other = writer.add_connection('/chatter', 'std_msgs/msg/String', typestore=typestore)
        for index, (stamp, frame) in enumerate(zip(stamps, frames)):
            msg = numpy_to_image(frame, 'rgb8', header(stamp, 'bag_camera'))
            writer.write(images, stamp + 5_000_000, serialize_message(msg))
            writer.write(other, stamp + 6_000_000, serialize_message(String(data=str(index))))


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_player_replays_a_bag_with_original_stamps(ros, tmp_path, clip, storage):
    from defvos_ros import play

    frames = [frame[:48, :64].copy() for frame in clip[0][:3]]
    stamps = [1_600_000_000 * 10**9 + i * 50_000_000 for i in range(3)]
    bag = tmp_path / f'bag_{storage}'
    _write_bag(bag, storage, stamps, frames)
    seed_png = tmp_path / 'seed.png'
    write_label_map(seed_png, np.ones((48, 64), np.uint8))
    images, seeds = [], []
    listener = ros.add(Node(f'bag_listener_{next(_names)}', context=ros.context))
    listener.create_subscription(Image, f'/replay_{storage}/image', images.append, RELIABLE)
    listener.create_subscription(Image, f'/replay_{storage}/seed', seeds.append, RELIABLE)
    code = play.main(['--bag', str(bag), '--topic', '/cam/image', '--publish-topic',
                      f'/replay_{storage}/image', '--seed', str(seed_png), '--seed-topic',
                      f'/replay_{storage}/seed', '--speed', '4', '--wait-subscribers', '20'])
    assert code == 0
    assert wait_until(lambda: len(images) == 3 and len(seeds) == 1, 10.0)
    ros.remove(listener)
    assert [stamp_to_ns(m.header.stamp) for m in images] == stamps
    assert all(m.header.frame_id == 'bag_camera' for m in images)
    for msg, frame in zip(images, frames):
        assert np.array_equal(image_to_rgb(msg), frame)
    assert stamp_to_ns(seeds[0].header.stamp) == stamps[0]
    assert seeds[0].encoding == 'mono8'


def test_player_rejects_a_missing_topic(tmp_path, clip):
    from defvos_ros import play

    bag = tmp_path / 'bag'
    _write_bag(bag, 'sqlite3', [10**9], [clip[0][0][:8, :8].copy()])
    assert play.main(['--bag', str(bag), '--topic', '/nope', '--wait-subscribers', '0']) == 2


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_recorder_writes_masks_bag_pngs_and_overlay_video(ros, tmp_path, clip, storage):
    from rosbags.rosbag2 import Reader

    frames = clip[0][:3]
    bag = tmp_path / 'masks_bag'
    recorder = ros.add(Recorder(tmp_path / 'out', bag=bag, storage=storage,
                                masks_topic='/rec/defvos/masks',
                                overlay_topic='/rec/defvos/overlay', save_masks=True,
                                keep_masks=True, context=ros.context))
    source = ros.add(Node(f'fake_defvos_{next(_names)}', context=ros.context))
    masks_pub = source.create_publisher(Image, '/rec/defvos/masks', RELIABLE)
    overlay_pub = source.create_publisher(Image, '/rec/defvos/overlay', RELIABLE)
    assert wait_until(lambda: masks_pub.get_subscription_count() > 0
                      and overlay_pub.get_subscription_count() > 0)
    stamps = [next_stamp() for _ in frames]
    masks = [(np.arange(frame[..., 0].size).reshape(frame.shape[:2]) % 3).astype(np.uint8)
             for frame in frames]
    for frame, mask, stamp in zip(frames, masks, stamps):
        masks_pub.publish(numpy_to_image(mask, 'mono8', header(stamp)))
        overlay_pub.publish(numpy_to_image(frame, 'rgb8', header(stamp)))
    assert wait_until(lambda: recorder.masks_received == 3 and recorder.overlays_received == 3)
    written = recorder.close()
    ros.remove(recorder)
    ros.remove(source)
    assert written['video'].stat().st_size > 0
    assert sorted(p.name for p in written['masks_dir'].glob('*.png')) == sorted(
        f'{s // 10**9}_{s % 10**9:09d}.png' for s in stamps)
    assert np.array_equal(read_label_map(sorted(written['masks_dir'].glob('*.png'))[0]),
                          masks[0])
    with Reader(bag) as reader:
        assert [c.topic for c in reader.connections] == ['/rec/defvos/masks']
        stored = [deserialize_message(bytes(raw), Image) for _, _, raw in reader.messages()]
    assert [stamp_to_ns(m.header.stamp) for m in stored] == stamps
    assert np.array_equal(labels_of(stored[1]), masks[1])


def test_demo_runs_end_to_end(tmp_path, monkeypatch, capsys):
    from defvos_ros import demo

    monkeypatch.setenv('ROS_DOMAIN_ID', str(DOMAIN_ID + 50))
    code = demo.main(['--out', str(tmp_path / 'demo'), '--frames', '5', '--size', str(SIZE),
                      '--threads', '1', '--domain-id', str(DOMAIN_ID + 50), '--bag'])
    output = capsys.readouterr().out
    assert code == 0, output
    assert 'masks received for 5/5 frames' in output
    assert 'J&F' in output
    assert (tmp_path / 'demo' / 'overlay.mp4').stat().st_size > 0
    assert (tmp_path / 'demo' / 'masks_bag' / 'metadata.yaml').exists()
    assert len(list((tmp_path / 'demo' / 'masks').glob('*.png'))) == 5
