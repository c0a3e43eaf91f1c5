"""The managed node over DDS: lifecycle transitions, /diagnostics, faults, start-up and exit.

Transitions are driven through the standard lifecycle services (lifecycle_msgs) as a
lifecycle manager would; faults are injected into the real node (a backend error, a dying
worker) or given as real files (corrupt weights). Harness: test/ros_harness.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from defvos_core.model.checkpoint import DEFAULT_STUDENT_WEIGHTS, read_weights
from defvos_ros.node import spin_until_failure
from ros_harness import (DOMAIN_ID, MASK_TIMEOUT, RELIABLE, Client, _names, labels_of,
                         next_stamp, start_node, wait_until)


class Manager:
    """A lifecycle manager's side: ChangeState / GetState of one node."""

    def __init__(self, ros, node_name: str) -> None:
        self.node = ros.add(Node(f'test_manager_{next(_names)}', context=ros.context))
        self.change = self.node.create_client(ChangeState, f'{node_name}/change_state')
        self.get = self.node.create_client(GetState, f'{node_name}/get_state')
        assert wait_until(lambda: self.change.service_is_ready() and self.get.service_is_ready())

    def _call(self, client, request):
        future = client.call_async(request)
        assert wait_until(future.done, MASK_TIMEOUT), f'no answer from {client.srv_name}'
        return future.result()

    def transition(self, transition_id: int) -> bool:
        request = ChangeState.Request()
        request.transition.id = transition_id
        return self._call(self.change, request).success

    def state(self) -> str:
        return self._call(self.get, GetState.Request()).current_state.label


class Diagnostics:
    """Collects /diagnostics statuses of one node."""

    def __init__(self, ros, node) -> None:
        self.name = f'{node.get_name()}: tracking'
        self.statuses: list[DiagnosticStatus] = []
        listener = ros.add(Node(f'test_diagnostics_{next(_names)}', context=ros.context))
        listener.create_subscription(DiagnosticArray, '/diagnostics', self._on, 10)

    def _on(self, msg: DiagnosticArray) -> None:
        self.statuses += [status for status in msg.status if status.name == self.name]

    def wait_for(self, predicate) -> DiagnosticStatus:
        assert wait_until(lambda: any(predicate(s) for s in self.statuses), 2 * MASK_TIMEOUT), \
            [(s.level, s.message) for s in self.statuses[-3:]]
        return [s for s in self.statuses if predicate(s)][-1]


def values(status: DiagnosticStatus) -> dict[str, str]:
    return {item.key: item.value for item in status.values}


def test_every_transition_through_the_lifecycle_services(ros, clip):
    frames, truth = clip
    node = start_node(ros, 'managed', autostart=False)
    manager = Manager(ros, '/managed/defvos')
    client = Client(ros, node, 'managed')
    assert manager.state() == 'unconfigured' and node.worker is None
    client.send_frame(frames[0], next_stamp())
    assert node.stats.dropped['inactive'] == 1  # counted, not lost

    assert manager.transition(Transition.TRANSITION_CONFIGURE)
    assert manager.state() == 'inactive' and node.tracker is not None
    client.send_frame(frames[0], next_stamp())
    assert node.stats.dropped['inactive'] == 2

    assert manager.transition(Transition.TRANSITION_ACTIVATE)
    assert manager.state() == 'active'
    stamps = [next_stamp() for _ in range(2)]
    client.track(frames[:2], truth[0], stamps)

    assert manager.transition(Transition.TRANSITION_DEACTIVATE)  # pause: objects are kept
    stamp = next_stamp()
    client.send_frame(frames[2], stamp)
    assert node.stats.dropped['inactive'] == 3 and stamp not in client.masks
    assert manager.transition(Transition.TRANSITION_ACTIVATE)
    assert labels_of(client.wait_mask(_send(client, frames[3]))).any()  # tracking resumes

    assert manager.transition(Transition.TRANSITION_DEACTIVATE)
    assert manager.transition(Transition.TRANSITION_CLEANUP)  # frees the model
    assert manager.state() == 'unconfigured'
    assert node.tracker is None and node.worker is None
    assert manager.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert manager.state() == 'finalized'


def _send(client, frame) -> int:
    stamp = next_stamp()
    client.send_frame(frame, stamp)
    return stamp


def test_a_failed_configure_returns_failure_with_a_log_line(ros, tmp_path):
    missing = tmp_path / 'missing.pt'
    node = start_node(ros, 'badconf', autostart=False, weights=str(missing))
    manager = Manager(ros, '/badconf/defvos')
    assert not manager.transition(Transition.TRANSITION_CONFIGURE)
    assert manager.state() == 'unconfigured'
    message = ros.wait_log(node.get_logger().name, 'configure failed')
    assert f'weights file not found: {missing}' in message


def test_diagnostics_report_rates_latency_drops_and_objects(ros, pipeline, clip):
    frames, truth = clip
    node, client = pipeline(expected_rate_hz=30.0)
    diagnostics = Diagnostics(ros, node)
    client.track(frames[:3], truth[0], [next_stamp() for _ in range(3)])
    status = diagnostics.wait_for(lambda s: values(s).get('objects tracked') == '1')
    fields = values(status)
    assert fields['state'] == 'active'
    assert {'input rate (Hz)', 'output rate (Hz)', 'latency p50 (ms)', 'latency p95 (ms)',
            'frames dropped', 'objects lost', 'memory frames', 'memory (MB)'} <= set(fields)
    # a 30 Hz camera was promised but frames come slower: WARN, naming the input rate
    warned = diagnostics.wait_for(lambda s: s.level == DiagnosticStatus.WARN)
    assert 'input' in warned.message and 'below' in warned.message
    assert int(values(warned)['memory frames']) >= 1


def test_a_backend_error_drops_the_frame_and_the_node_continues(ros, pipeline, clip):
    frames, truth = clip
    node, client = pipeline()
    client.track(frames[:2], truth[0], [next_stamp() for _ in range(2)])
    backend = node.tracker.backend
    original = backend.segment

    def failing(*args, **kwargs):
        backend.segment = original
        raise RuntimeError('CUDA error: an illegal memory access was encountered (injected)')

    backend.segment = failing
    bad = _send(client, frames[2])
    ros.wait_log(node.get_logger().name, 'error while tracking: RuntimeError: CUDA error')
    assert wait_until(lambda: node.stats.dropped['error'] == 1) and bad not in client.masks
    assert labels_of(client.wait_mask(_send(client, frames[3]))).any()  # tracking goes on


def test_a_dead_worker_is_reported_on_diagnostics_and_ends_the_node_with_1(ros, clip):
    node = start_node(ros, 'doomed')
    diagnostics = Diagnostics(ros, node)

    def broken(*args, **kwargs):
        raise MemoryError('injected: the worker loop itself fails')

    node.worker._process_requests = broken  # outside the per-item guard
    client = Client(ros, node, 'doomed')
    client.send_frame(clip[0][0], next_stamp())
    assert node.failed.wait(MASK_TIMEOUT)
    status = diagnostics.wait_for(lambda s: s.level == DiagnosticStatus.ERROR)
    assert 'inference worker died: MemoryError' in status.message
    ros.remove(node)
    executor = SingleThreadedExecutor(context=ros.context)
    executor.add_node(node)
    assert spin_until_failure(node, executor) == 1  # main() exits with this code
    executor.remove_node(node)


def _corrupt(path: Path) -> Path:
    path.write_bytes(b'not a checkpoint')
    return path


def _truncated(path: Path) -> Path:
    data = DEFAULT_STUDENT_WEIGHTS.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def _wrong_architecture(path: Path) -> Path:
    payload = read_weights(DEFAULT_STUDENT_WEIGHTS)
    payload['model_config']['num_layers'] = 2  # the state dict has one layer
    torch.save(payload, path)
    return path


@pytest.mark.parametrize('make', [_corrupt, _truncated, _wrong_architecture])
def test_bad_weights_give_one_fatal_line_and_exit_code_1(tmp_path, make):
    weights = make(tmp_path / 'weights.pt')
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID))
    run = subprocess.run([sys.executable, '-m', 'defvos_ros', '--ros-args', '-p',
                          f'weights:={weights}'], capture_output=True, text=True,
                         timeout=120, env=env)
    assert run.returncode == 1
    fatal = [line for line in (run.stdout + run.stderr).splitlines() if '[FATAL]' in line]
    assert len(fatal) == 1, run.stderr
    assert str(weights) in fatal[0]


@pytest.mark.parametrize('busy', [False, True])
def test_ctrl_c_ends_the_node_promptly(ros, clip, busy):
    """SIGINT ends the process well before launch would escalate to SIGTERM (5 s)."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), PYTHONUNBUFFERED='1')
    namespace = f'sigint{next(_names)}'
    process = subprocess.Popen(
        [sys.executable, '-m', 'defvos_ros', '--ros-args', '-r', f'__ns:=/{namespace}',
         '-p', 'size:=120', '-p', 'num_threads:=1'], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env=env)
    try:
        for line in process.stdout:
            if 'active: processing frames' in line:
                break
        if busy:
            client_node = ros.add(Node(f'test_sigint_{next(_names)}', context=ros.context))
            from sensor_msgs.msg import Image

            from defvos_ros.image_conversion import numpy_to_image
            from ros_harness import header

            images = client_node.create_publisher(Image, f'/{namespace}/image', RELIABLE)
            seeds = client_node.create_publisher(Image, f'/{namespace}/seed_mask', RELIABLE)
            masks = []
            client_node.create_subscription(Image, f'/{namespace}/defvos/masks',
                                            masks.append, RELIABLE)
            assert wait_until(lambda: images.get_subscription_count() > 0
                              and seeds.get_subscription_count() > 0)
            deadline = time.monotonic() + 2 * MASK_TIMEOUT
            while not masks and time.monotonic() < deadline:  # until the readers matched
                stamp = next_stamp()
                images.publish(numpy_to_image(clip[0][0], 'rgb8', header(stamp)))
                seeds.publish(numpy_to_image(clip[1][0].astype(np.uint8), 'mono8',
                                             header(stamp)))
                wait_until(lambda: masks, 2.0)
            assert masks, 'the node never published a mask'
            for frame in clip[0][1:6]:  # the worker is tracking when the signal comes
                images.publish(numpy_to_image(frame, 'rgb8', header(next_stamp())))
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
        elapsed = time.monotonic() - sent
        output = process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, output[-2000:]
    assert elapsed < 3.0, f'{elapsed:.1f} s after SIGINT'  # about 0.1 s when idle here


def test_ctrl_c_during_start_up_is_a_clean_exit(monkeypatch):
    """SIGINT can land while autostart's transition publishes its event: exit 0, no FATAL.

    (rclpy's handler shuts the context down; the lifecycle then fails the transition and
    autostart raises StartupError, or the executor cannot be made. Seen as exit code 1 right
    after 'active'.)
    """
    import defvos_ros.node as node_module

    def interrupted_start():
        rclpy.shutdown()  # what rclpy's SIGINT handler does to the context
        raise node_module.StartupError('activate failed')

    monkeypatch.setattr(node_module, 'DefvosNode', interrupted_start)
    assert node_module.main([]) == 0

    class Started:  # the node is up; the signal lands before the executor exists
        def destroy_node(self) -> None:
            pass

    def executor_after_ctrl_c():
        rclpy.shutdown()
        return SingleThreadedExecutor()  # RCLError: the context is not valid

    monkeypatch.setattr(node_module, 'DefvosNode', Started)
    monkeypatch.setattr(node_module, 'SingleThreadedExecutor', executor_after_ctrl_c)
    assert node_module.main([]) == 0
    monkeypatch.undo()

    def failed_start():
        raise node_module.StartupError('no such weights file')

    monkeypatch.setattr(node_module, 'DefvosNode', failed_start)
    assert node_module.main([]) == 1  # a real start-up failure still exits 1


def test_ctrl_c_between_the_check_and_the_wait_ends_the_spin_cleanly():
    """The context shut down just before spin_once: its wait set fails, the loop ends 0."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    node = Node(f'test_spin_{next(_names)}', context=context)
    node.failed = threading.Event()
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spin_once = executor.spin_once

    def shut_down_then_spin(timeout_sec=None):
        context.shutdown()  # what rclpy's SIGINT handler does, at the worst moment
        spin_once(timeout_sec=timeout_sec)

    executor.spin_once = shut_down_then_spin
    try:
        assert spin_until_failure(node, executor) == 0
    finally:
        node.destroy_node()
        context.try_shutdown()
