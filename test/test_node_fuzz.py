"""Fuzz test of the node over DDS: hostile input at camera rate, then it must still track.

About 2,000 malformed messages in well under a minute (random encodings, sizes and steps,
truncated data, huge declared sizes, compressed garbage and a PNG declaring a 60000 x 60000
canvas, seeds with unknown ids / wrong sizes / wrong stamps, bad object requests, reset and
remove storms), interleaved with valid frames. Then the sample clip, seeded through the
service: the node is alive and tracks (mean IoU within 0.02 of an undisturbed node), this
process's RSS grew by less than RSS_GROWTH_MB, and each kind of rejection was logged exactly
once (the throttle period is longer than the test). Seeds are fixed: the run is repeatable.
"""

from __future__ import annotations

import struct
import time
import zlib

import numpy as np
from defvos_interfaces.msg import ObjectPrompt
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from defvos_interfaces.srv import AddObjects, RemoveObjects
from defvos_core.evaluation.metrics import region_jaccard
from defvos_ros.image_conversion import numpy_to_image, rgb_to_compressed
from ros_harness import (MASK_TIMEOUT, RELIABLE, _names, box_prompt, header, labels_of,
                         mask_prompt, next_stamp, wait_until)

RSS_GROWTH_MB = 300  # bound on this process's RSS growth over the fuzz phase
MESSAGES = 2000
RATE_HZ = 100.0  # faster than a camera: more hostility per second of CI


def rss_mb() -> float:
    """Return this process's resident set size in MB (Linux /proc)."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    raise RuntimeError('no VmRSS in /proc/self/status')


def png_bomb(width: int = 60000, height: int = 60000) -> bytes:
    """Return a tiny PNG whose header declares a huge canvas."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack('>I', len(data)) + kind + data
                + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr)
            + chunk(b'IDAT', zlib.compress(b'\x00' * 64)) + chunk(b'IEND', b''))


def hostile_image(rng: np.random.Generator, frame: np.ndarray) -> Image:
    """Return one malformed (or unusual) raw image message."""
    height, width = frame.shape[:2]
    choice = rng.integers(8)
    msg = numpy_to_image(frame, 'rgb8', header(next_stamp()))
    if choice == 0:  # unknown or unsupported encoding
        msg.encoding = str(rng.choice(['32FC1', 'bayer_rggb8', '', 'rgb16', 'nonsense']))
    elif choice == 1:  # truncated data
        msg.data = bytes(msg.data)[: int(rng.integers(0, len(msg.data)))]
    elif choice == 2:  # huge declared size, tiny data
        msg.width, msg.height = int(rng.integers(10_000, 100_000)), 50_000
        msg.step, msg.data = msg.width * 3, b'\x00' * 64
    elif choice == 3:  # step smaller than a row
        msg.step = int(rng.integers(0, width * 3))
    elif choice == 4:  # empty
        msg.width = msg.height = 0
    elif choice == 5:  # another size than the tracked stream
        small = np.ascontiguousarray(frame[: height // 2, : width // 2])
        msg = numpy_to_image(small, 'rgb8', header(next_stamp()))
    elif choice == 6:  # extreme aspect ratio (a 1-pixel-high strip)
        strip = np.ascontiguousarray(frame[:1, :])
        msg = numpy_to_image(strip, 'rgb8', header(next_stamp()))
    else:  # mono16 with random bytes: valid, just noise
        noise = rng.integers(0, 65535, (height, width), dtype=np.uint16)
        msg = numpy_to_image(noise, 'mono16', header(next_stamp()))
    return msg


def hostile_compressed(rng: np.random.Generator, frame: np.ndarray) -> CompressedImage:
    """Return one malformed compressed image message."""
    choice = rng.integers(4)
    if choice == 0:
        return CompressedImage(header=header(next_stamp()), format='png', data=png_bomb())
    if choice == 1:
        return CompressedImage(header=header(next_stamp()), format='jpeg',
                               data=rng.integers(0, 255, 500, dtype=np.uint8).tobytes())
    msg = rgb_to_compressed(frame, 'jpeg', header(next_stamp()))
    if choice == 2:
        msg.data = bytes(msg.data)[:100]
    else:
        msg.format = '16UC1; compressedDepth'
    return msg


def hostile_seed(rng: np.random.Generator, truth: np.ndarray, stamp: int) -> Image:
    """Return one malformed seed mask message for the frame stamped ``stamp``."""
    choice = rng.integers(5)
    if choice == 0:  # ids beyond 254
        return numpy_to_image(truth.astype(np.uint16) * 300, 'mono16', header(stamp))
    if choice == 1:  # wrong size
        return numpy_to_image(truth[:50, :50].astype(np.uint8), 'mono8', header(stamp))
    if choice == 2:  # a stamp matching no frame
        return numpy_to_image(truth.astype(np.uint8), 'mono8', header(stamp - 3600 * 10**9))
    if choice == 3:  # too many objects (max_objects 4)
        many = (np.arange(truth.size).reshape(truth.shape) % 7).astype(np.uint8)
        return numpy_to_image(many, 'mono8', header(stamp))
    return numpy_to_image(np.dstack([truth] * 3).astype(np.uint8), 'rgb8', header(stamp))


def hostile_request(rng: np.random.Generator, truth: np.ndarray) -> AddObjects.Request:
    """Return one bad ~/add_objects request."""
    choice = rng.integers(4)
    request = AddObjects.Request(header=header(next_stamp()))
    if choice == 0:
        request.objects = [box_prompt('x', 5, 5, 5, 5)]
    elif choice == 1:
        request.objects = [ObjectPrompt(id='', kind=ObjectPrompt.KIND_MASK)]
    elif choice == 2:
        request.objects = [ObjectPrompt(id='p', kind=ObjectPrompt.KIND_POINTS, point_labels=[3])]
    else:
        request.objects = [mask_prompt('m', truth[:10, :10])]
    return request


def track_clip(node_ns: str, ros, frames, truth) -> float:
    """Seed the clip through ~/add_objects, track it over DDS; return the mean IoU."""
    client = ros.add(Node(f'test_fuzz_track_{next(_names)}', context=ros.context))
    images = client.create_publisher(Image, f'/{node_ns}/image', RELIABLE)
    add = client.create_client(AddObjects, f'/{node_ns}/defvos/add_objects')
    reset = client.create_client(Trigger, f'/{node_ns}/defvos/reset')
    masks: dict[int, Image] = {}
    client.create_subscription(Image, f'/{node_ns}/defvos/masks',
                               lambda m: masks.__setitem__(
                                   m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, m),
                               RELIABLE)
    assert wait_until(lambda: add.service_is_ready() and reset.service_is_ready()
                      and images.get_subscription_count() > 0)
    done = reset.call_async(Trigger.Request())
    assert wait_until(done.done)
    ious = []
    for index, frame in enumerate(frames):
        stamp = next_stamp()
        images.publish(numpy_to_image(frame, 'rgb8', header(stamp)))
        if index == 0:
            deadline = time.monotonic() + MASK_TIMEOUT
            while True:  # the frame must reach the node's buffer before the request
                answer = add.call_async(AddObjects.Request(
                    header=header(stamp), objects=[mask_prompt('bear', truth[0])]))
                assert wait_until(answer.done)
                if answer.result().success or time.monotonic() > deadline:
                    break
            assert answer.result().success, answer.result().message
        assert wait_until(lambda: stamp in masks), f'no mask for frame {index}'
        if index:
            ious.append(region_jaccard(labels_of(masks[stamp]) == 1, truth[index] == 1))
    return float(np.mean(ious))


def test_hostile_input_then_tracking_is_unharmed(ros, pipeline, clip):
    frames, truth = clip
    frames, truth = frames[:12], truth[:12]
    parameters = dict(warning_throttle_sec=600.0, max_objects=4, seed_wait_sec=0.2)
    reference, _ = pipeline(**parameters)
    undisturbed = track_clip(reference.get_namespace().strip('/'), ros, frames, truth)

    node, client = pipeline(**parameters)
    compressed_node, compressed_client = pipeline(compressed=True, **parameters)
    fuzzer = ros.add(Node(f'test_fuzzer_{next(_names)}', context=ros.context))
    namespace = node.get_namespace()
    add = fuzzer.create_client(AddObjects, f'{namespace}/defvos/add_objects')
    remove = fuzzer.create_client(RemoveObjects, f'{namespace}/defvos/remove_objects')
    reset = fuzzer.create_client(Trigger, f'{namespace}/defvos/reset')
    assert wait_until(lambda: add.service_is_ready() and remove.service_is_ready())
    # warm up (model loaded, one tracked object each), then measure RSS over the fuzz phase
    client.track(frames[:2], truth[0], [next_stamp() for _ in range(2)])
    stamp = next_stamp()
    compressed_client.send(rgb_to_compressed(frames[0], 'jpeg', header(stamp)))
    compressed_client.send_seed(truth[0], stamp)
    compressed_client.wait_mask(stamp)
    before = rss_mb()
    rng = np.random.default_rng(2026)
    pending = []
    valid_stamp = next_stamp()
    for index in range(MESSAGES):
        kind = index % 10
        if index % 200 == 199:  # a reset storm now and then; objects come back right after
            for _ in range(3):
                pending.append(reset.call_async(Trigger.Request()))
            assert wait_until(pending[-1].done)
            stamp = valid_stamp = next_stamp()
            client.image_pub.publish(numpy_to_image(frames[0], 'rgb8', header(stamp)))
            client.seed_pub.publish(numpy_to_image(truth[0].astype(np.uint8), 'mono8',
                                                   header(stamp)))
        elif kind < 5:
            client.image_pub.publish(hostile_image(rng, frames[index % len(frames)]))
        elif kind == 5:
            compressed_client.image_pub.publish(hostile_compressed(rng, frames[0]))
        elif kind == 6:
            client.seed_pub.publish(hostile_seed(rng, truth[0], valid_stamp))
        elif kind == 7:
            pending.append(add.call_async(hostile_request(rng, truth[0])))
        elif kind == 8:
            pending.append(remove.call_async(RemoveObjects.Request(ids=['ghost', 'nobody'])))
        else:  # a valid frame now and then
            valid_stamp = next_stamp()
            client.image_pub.publish(numpy_to_image(frames[index % len(frames)], 'rgb8',
                                                    header(valid_stamp)))
        time.sleep(1.0 / RATE_HZ)
    assert wait_until(lambda: all(future.done() for future in pending), 60.0)
    growth = rss_mb() - before
    print(f'RSS growth {growth:.0f} MB; rejections {dict(node.warnings.counts)} '
          f'{dict(compressed_node.warnings.counts)}; drops {dict(node.stats.dropped)}')
    assert growth < RSS_GROWTH_MB, f'RSS grew by {growth:.0f} MB'
    assert node.worker.alive and compressed_node.worker.alive

    # every kind of rejection was counted, and logged exactly once (throttled)
    for fuzzed in (node, compressed_node):
        counts = dict(fuzzed.warnings.counts)
        assert sum(counts.values()) > 100, counts
        marker = f'{fuzzed.get_logger().name}'
        assert client.reset().success  # its log line comes after every earlier line
        ros.wait_log(node.get_logger().name, 'reset: cleared')
        for kind in counts:
            logged = ros.log_messages(marker, f'[{kind}]')
            assert len(logged) == 1, (kind, counts[kind], logged[:3])
    assert {'image_encoding', 'image_data', 'image_too_large', 'frame_shape', 'seed_ids',
            'seed_size', 'seed_invalid', 'seed_too_many', 'prompt_box'} <= \
        set(node.warnings.counts)
    assert {'compressed', 'image_too_large'} <= set(compressed_node.warnings.counts)

    disturbed = track_clip(namespace.strip('/'), ros, frames, truth)
    assert abs(disturbed - undisturbed) <= 0.02, (disturbed, undisturbed)
