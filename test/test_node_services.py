"""The node's object services and per-object output over DDS (harness: test/ros_harness.py).

~/add_objects (string ids, mask values, add or replace), ~/remove_objects, ~/reset, the
defvos/objects message, and that a pending request never stalls the image callbacks, under
the single- and the multi-threaded executor.
"""

from __future__ import annotations

import numpy as np
import pytest
from defvos_interfaces.msg import ObjectPrompt, Point2D
from std_msgs.msg import Header

from defvos_core.inference.presence import PresenceTracker
from defvos_core.inference.tracker import TrackResult
from defvos_ros.messages import box_corners, box_message, parse_prompts, tracked_objects_message
from ros_harness import (MASK_TIMEOUT, box_prompt, labels_of, mask_prompt, next_stamp,
                         object_iou, slow_model, wait_until)


def _rock(shape) -> np.ndarray:
    rock = np.zeros(shape, np.uint8)
    rock[:40, :60] = 1  # a patch of rock in the top-left corner
    return rock


def test_add_replace_and_remove_objects_by_id(ros, pipeline, clip):
    frames, truth = clip
    node, client = pipeline()
    stamps = [next_stamp() for _ in range(6)]
    client.send_frame(frames[0], stamps[0])
    response = client.add(stamps[0], [mask_prompt('bear', truth[0]),
                                      mask_prompt('rock', _rock(truth[0].shape))])
    assert response.success, response.message
    assert dict(zip(response.ids, response.mask_values)) == {'bear': 1, 'rock': 2}
    seeded = labels_of(client.wait_mask(stamps[0]))
    assert set(np.unique(seeded)) == {0, 1, 2}
    client.send_frame(frames[1], stamps[1])
    labels = labels_of(client.wait_mask(stamps[1]))
    assert object_iou(labels == 1, truth[1] == 1) >= 0.5
    objects = client.objects_for(stamps[1])
    assert [(o.id, o.mask_value) for o in objects.objects] == [('bear', 1), ('rock', 2)]
    assert objects.objects[0].present

    # a known id replaces its object and keeps its mask value; a new id takes the next one
    client.send_frame(frames[2], stamps[2])
    client.wait_mask(stamps[2])
    edge = np.zeros_like(truth[2])
    edge[:, -50:] = 1
    response = client.add(stamps[2], [mask_prompt('rock', edge), mask_prompt('sky', edge[::-1])])
    assert dict(zip(response.ids, response.mask_values)) == {'rock': 2, 'sky': 3}

    response = client.remove('rock', 'nope')
    assert response.success and list(response.removed) == ['rock']
    assert list(response.unknown) == ['nope']
    assert node.warnings.counts['remove_unknown'] == 1
    client.send_frame(frames[3], stamps[3])
    labels = labels_of(client.wait_mask(stamps[3]))  # the removal is done before this frame
    assert 2 not in labels
    assert [o.id for o in client.objects_for(stamps[3]).objects] == ['bear', 'sky']
    assert list(client.remove('bear', 'sky').removed) == ['bear', 'sky']
    client.send_frame(frames[4], stamps[4])
    assert wait_until(lambda: node.stats.dropped['no_objects'] >= 1)
    assert stamps[4] not in client.masks  # nothing is published while nothing is tracked


def test_a_box_and_clicks_seed_objects_that_are_then_tracked(ros, pipeline, clip):
    """A detector's box and an operator's clicks become masks in the node (the prompt head)."""
    frames, truth = clip
    node, client = pipeline()
    rows, cols = np.nonzero(truth[0] == 1)
    box = box_prompt('bear', cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    centre = (float(np.median(cols)), float(np.median(rows)))
    clicks = ObjectPrompt(id='bear_clicked', kind=ObjectPrompt.KIND_POINTS,
                          points=[Point2D(x=centre[0], y=centre[1])], point_labels=[1])
    for prompt in (box, clicks):
        client.reset()
        stamps = [next_stamp() for _ in range(2)]
        client.send_frame(frames[0], stamps[0])
        response = client.add(stamps[0], [prompt])
        assert response.success, response.message
        assert list(response.mask_values) == [1]
        seeded = labels_of(client.wait_mask(stamps[0]))
        assert object_iou(seeded == 1, truth[0] == 1) >= 0.6, prompt.id
        client.send_frame(frames[1], stamps[1])
        labels = labels_of(client.wait_mask(stamps[1]))
        assert object_iou(labels == 1, truth[1] == 1) >= 0.6, prompt.id
        assert [o.id for o in client.objects_for(stamps[1]).objects] == [prompt.id]


def test_bad_requests_are_refused_with_their_reason(ros, pipeline, clip):
    frames, truth = clip
    node, client = pipeline()
    stamp = next_stamp()
    client.send_frame(frames[0], stamp)
    empty_box = box_prompt('a', 10, 10, 10, 30)
    response = client.add(stamp, [empty_box])
    assert not response.success and 'empty' in response.message
    assert node.warnings.counts['prompt_box'] == 1
    points = ObjectPrompt(id='b', kind=ObjectPrompt.KIND_POINTS, point_labels=[1])
    assert 'one label per point' in client.add(stamp, [points]).message
    twice = client.add(stamp, [mask_prompt('c', truth[0]), mask_prompt('c', truth[0])])
    assert 'given twice' in twice.message
    small = client.add(stamp, [mask_prompt('d', np.ones((100, 100), np.uint8))])
    assert not small.success and 'but its frame is 427x240' in small.message
    late = client.add(next_stamp() + 100 * 10**9, [mask_prompt('e', truth[0])])
    assert not late.success and 'no frame within' in late.message  # after seed_wait_sec
    assert node.tracker.object_ids == []
    assert client.add(stamp, [mask_prompt('bear', truth[0])]).success  # still serving


def test_reset_clears_objects_and_stops_publishing(ros, pipeline, clip):
    frames, truth = clip
    node, client = pipeline()
    client.track(frames[:2], truth[0], [next_stamp() for _ in range(2)])
    response = client.reset()
    assert response.success and "cleared 1 object(s) ['1']" in response.message
    assert node.tracker.object_ids == []
    stamp = next_stamp()
    client.send_frame(frames[2], stamp)
    assert wait_until(lambda: node.stats.dropped['no_objects'] >= 1)
    assert stamp not in client.masks
    stamps = [next_stamp() for _ in range(2)]
    assert len(client.track(frames[3:5], truth[3], stamps)) == 2  # re-seeding works


@pytest.mark.parametrize('executor', ['single', 'multi'])
def test_pending_requests_never_stall_the_image_callbacks(ros, pipeline, clip, executor):
    """A reset and a remove wait for a busy worker while frames keep arriving."""
    ros.use_executor(executor)
    frames, truth = clip
    node, client = pipeline()
    client.track(frames[:2], truth[0], [next_stamp() for _ in range(2)])
    with slow_model(node) as started:
        busy = next_stamp()
        client.send_frame(frames[2], busy)
        assert started.wait(MASK_TIMEOUT)  # the worker is inside a step
        remove = client.remove_client.call_async(
            type(client.remove_client.srv_type.Request())(ids=['nope']))
        reset = client.reset_client.call_async(client.reset_client.srv_type.Request())
        before = node.stats.total_received
        for index in range(3, 6):  # image callbacks run while both services are pending
            client.send_frame(frames[index], next_stamp())
        assert node.stats.total_received == before + 3
        assert not reset.done() and not remove.done()
    assert wait_until(reset.done) and wait_until(remove.done)
    assert reset.result().success and list(remove.result().unknown) == ['nope']


def test_a_seed_received_before_a_reset_is_discarded_with_a_log_line(ros, pipeline, clip):
    frames, truth = clip
    node, client = pipeline()
    stamps = [next_stamp() for _ in range(3)]
    client.track(frames[:2], truth[0], stamps[:2])
    with slow_model(node) as started:
        client.send_frame(frames[2], stamps[2])
        assert started.wait(MASK_TIMEOUT)
        client.send_seed(_rock(truth[2].shape) * 2, stamps[2])
        assert wait_until(lambda: len(node.worker._requests) == 1)  # queued before the reset
        reset = client.reset_client.call_async(client.reset_client.srv_type.Request())
        assert wait_until(lambda: node.worker._generation == 1)
        client.send_seed(truth[2], stamps[2])  # after the reset: applied
    assert wait_until(reset.done)
    ros.wait_log(node.get_logger().name, 'discarded: a reset arrived after it')
    ros.wait_log(node.get_logger().name, "tracking ['1']")
    assert wait_until(lambda: node.tracker.object_ids == [1])


# ----------------------------------------------------------------- messages, no DDS
def test_boxes_follow_the_vision_msgs_convention():
    box = box_message(10, 20, 50, 30)
    assert (box.center.position.x, box.center.position.y, box.size_x, box.size_y) == \
        (30, 25, 40, 10)
    assert box_corners(box) == (10, 20, 50, 30)
    prompts = parse_prompts([ObjectPrompt(id='a', kind=ObjectPrompt.KIND_BOX, box=box)])
    assert prompts.boxes == {'a': (10, 20, 50, 30)}
    with pytest.raises(ValueError, match='unknown prompt kind 7'):
        parse_prompts([ObjectPrompt(id='a', kind=7)])


def test_objects_message_reports_boxes_presence_and_frames_since_seen():
    labels = np.zeros((10, 20), np.uint8)
    labels[2:5, 3:9] = 4
    presence = PresenceTracker()
    scores = {4: 0.8, 9: 0.9}
    states = presence.update({4: 18, 9: 5}, scores, labels.size)  # both seen
    states = presence.update({4: 18, 9: 0}, scores, labels.size)  # 9 lost
    states = presence.update({4: 18, 9: 0}, scores, labels.size)
    assert (states[9].present, states[9].frames_since_seen) == (False, 2)
    result = TrackResult(labels, [4, 9], {4: 0.8, 9: 0.0}, {4: 18, 9: 0}, 3)
    msg = tracked_objects_message(result, states, {4: 'cup', 9: 'ball'}, Header(frame_id='c'))
    cup, ball = msg.objects
    assert (cup.id, cup.mask_value, cup.present, cup.frames_since_seen) == ('cup', 4, True, 0)
    assert (cup.bbox.size_x, cup.bbox.size_y) == (6, 3)
    assert (cup.bbox.center.position.x, cup.bbox.center.position.y) == (6.0, 3.5)
    assert cup.area_fraction == pytest.approx(18 / 200) and cup.score == pytest.approx(0.8)
    assert (ball.present, ball.frames_since_seen, ball.bbox.size_x) == (False, 2, 0.0)
    assert presence.update({4: 18}, scores, labels.size).keys() == {4}  # removed: forgotten
