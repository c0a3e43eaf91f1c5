"""Tests of the frame ring buffer that pairs late seed masks with their frames by stamp."""

import threading

import pytest

from defvos_ros.seed_buffer import BufferedFrame, FrameRingBuffer

MS = 1_000_000  # nanoseconds


def _buffer(stamps_ms, capacity=5):
    buffer = FrameRingBuffer(capacity)
    for stamp in stamps_ms:
        buffer.push(BufferedFrame(stamp * MS, f'frame@{stamp}'))
    return buffer


def test_exact_stamp_is_matched():
    buffer = _buffer([0, 33, 66, 100])
    assert buffer.match(66 * MS, 0).item == 'frame@66'


def test_nearest_frame_within_tolerance_is_matched():
    buffer = _buffer([0, 33, 66, 100])
    assert buffer.match(70 * MS, 5 * MS).item == 'frame@66'
    assert buffer.match(30 * MS, 5 * MS).item == 'frame@33'


def test_no_frame_within_tolerance_gives_none():
    buffer = _buffer([0, 33, 66, 100])
    assert buffer.match(50 * MS, 10 * MS) is None
    assert buffer.match(500 * MS, 10 * MS) is None
    assert FrameRingBuffer(3).match(0, 10 * MS) is None


def test_tolerance_bound_is_inclusive():
    buffer = _buffer([100])
    assert buffer.match(110 * MS, 10 * MS).item == 'frame@100'
    assert buffer.match(110 * MS + 1, 10 * MS) is None


def test_capacity_bounds_the_buffer_and_drops_the_oldest():
    buffer = _buffer(range(0, 1000, 10), capacity=5)
    assert len(buffer) == 5
    assert buffer.capacity == 5
    assert buffer.span() == (950 * MS, 990 * MS)
    assert buffer.match(940 * MS, 0) is None  # dropped
    assert buffer.match(950 * MS, 0).item == 'frame@950'


def test_stamps_need_not_be_monotonic():
    buffer = _buffer([300, 310, 0, 10])  # a looped replay restarts its stamps
    assert buffer.match(5 * MS, 5 * MS).item in ('frame@0', 'frame@10')
    assert buffer.match(305 * MS, 1 * MS) is None
    assert buffer.span() == (0, 310 * MS)


def test_equally_near_frames_prefer_the_latest_received():
    buffer = FrameRingBuffer(4)
    buffer.push(BufferedFrame(100 * MS, 'first'))
    buffer.push(BufferedFrame(100 * MS, 'second'))
    assert buffer.match(100 * MS, 0).item == 'second'


def test_clear_and_span_of_empty_buffer():
    buffer = _buffer([1, 2, 3])
    buffer.clear()
    assert len(buffer) == 0
    assert buffer.span() is None


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match='capacity'):
        FrameRingBuffer(0)
    with pytest.raises(ValueError, match='tolerance'):
        _buffer([0]).match(0, -1)


def test_concurrent_pushes_and_matches_stay_bounded():
    buffer = FrameRingBuffer(8)
    errors = []

    def push(offset):
        for stamp in range(offset, offset + 2000):
            buffer.push(BufferedFrame(stamp, stamp))

    def match():
        try:
            for stamp in range(2000):
                buffer.match(stamp, 3)
                buffer.span()
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=push, args=(i * 10_000,)) for i in range(2)]
    threads.append(threading.Thread(target=match))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(buffer) == 8
