"""launch_testing test of launch/segment.launch.py: the node starts through it and publishes.

Run with plain pytest (launch_testing's pytest plugin, pytest < 9); skipped when
launch_testing is not installed. The node runs as a separate process started by the launch
file in a pid-derived ROS domain, under the namespace ``launch_test``, with the image and
seed topics remapped by launch arguments; the test publishes three frames of the sample
clip and the first-frame seed, and waits for each frame's mask on
``/launch_test/defvos/masks``.

The launch file's logic (arguments, parameter mapping, finding the installed package) is
``defvos_ros.launch_arguments``, tested without the launch stack in
test_launch_arguments.py. This test passes ``params_file`` explicitly only to run at
processing size 120 (a copy of config/defvos.yaml). AMENT_PREFIX_PATH is set to the venv
prefix when unset, as launch_ros expects.
"""

import os
import sys
import tempfile
import time
import unittest
from pathlib import Path

import pytest

launch_testing = pytest.importorskip(
    'launch_testing', reason='launch_testing is not installed: ROS 2\'s launch stack has no '
    'PyPI wheels; source a ROS 2 install to run this test')

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402
import yaml  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / 'launch' / 'segment.launch.py'
CLIP = REPO / 'defvos_core' / 'assets' / 'sample' / 'bear'
DOMAIN_ID = 1 + os.getpid() % 50  # same rule as test_node.py: one domain per test run
NAMESPACE = 'launch_test'
_TMP = tempfile.TemporaryDirectory(prefix='defvos_launch_test_')


def _fast_params_file() -> Path:
    """Return a copy of config/defvos.yaml at processing size 120, one torch thread."""
    config = yaml.safe_load((REPO / 'config' / 'defvos.yaml').read_text())
    config['/**']['ros__parameters'].update(size=120, num_threads=1, summary_period_sec=0.0)
    path = Path(_TMP.name) / 'defvos_fast.yaml'
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.launch_test
def generate_test_description():
    os.environ['ROS_DOMAIN_ID'] = str(DOMAIN_ID)  # inherited by the launched node
    os.environ.setdefault('AMENT_PREFIX_PATH', sys.prefix)
    segment = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={
            'image_topic': 'camera/image_raw', 'seed_topic': 'operator/seed',
            'params_file': str(_fast_params_file()), 'namespace': NAMESPACE,
            'backend': 'torch', 'device': 'cpu', 'use_sim_time': 'false',
        }.items())
    return launch.LaunchDescription([segment, launch_testing.actions.ReadyToTest()])


class TestSegmentLaunch(unittest.TestCase):
    """Talk to the launched node over DDS."""

    @classmethod
    def setUpClass(cls):
        from defvos_ros.play import Player
        from defvos_ros.ros_helpers import spin_in_thread

        cls.context = rclpy.Context()
        rclpy.init(context=cls.context)
        cls.player = Player(f'/{NAMESPACE}/camera/image_raw', f'/{NAMESPACE}/operator/seed',
                            'launch_camera', wait_for=f'/{NAMESPACE}/defvos/masks',
                            context=cls.context)
        cls.executor = SingleThreadedExecutor(context=cls.context)
        cls.executor.add_node(cls.player)
        cls.thread = spin_in_thread(cls.executor)

    @classmethod
    def tearDownClass(cls):
        cls.executor.shutdown()
        cls.player.destroy_node()
        rclpy.shutdown(context=cls.context)
        cls.thread.join(timeout=10)

    def test_masks_arrive_for_every_frame(self, proc_output):
        from defvos_core.data.masks import read_label_map
        from defvos_core.data.video_io import iter_video_frames

        # the node read params_file (size 120) and the remapped topics, and autostart
        # (the launch default) configured and activated it
        proc_output.assertWaitFor(f"size 120, frames from '/{NAMESPACE}/camera/image_raw'",
                                  timeout=120)
        proc_output.assertWaitFor('active: processing frames', timeout=30)
        self.assertTrue(self.player.wait_for_subscribers(60.0))
        time.sleep(0.3)  # let the node's best-effort reader match the player's writer
        frames = [item for item, _ in zip(iter_video_frames(CLIP / 'frames'), range(3))]
        seed = read_label_map(CLIP / 'masks' / '00000.png')
        missing = self.player.play(frames, seed=seed, rate=0.0, wait_timeout=30.0)
        self.assertEqual(missing, 0)
        self.assertEqual(len(self.player.sent), 3)
        proc_output.assertWaitFor('seed_mask on', timeout=10)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    """The node exits cleanly when the launch shuts down."""

    def test_exit_code(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
