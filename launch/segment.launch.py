"""Launch the defvos segmenter node.

    ros2 launch defvos_ros segment.launch.py [image_topic:=/camera/image_raw]
        [seed_topic:=seed_mask] [params_file:=my.yaml] [weights:=student.pt]
        [backend:=torch|onnxruntime] [device:=cuda:0] [namespace:=robot1] [use_sim_time:=true]

Masks appear on /defvos/masks, or /<namespace>/defvos/masks when a namespace is given.
``weights``, ``backend`` and ``device`` override ``params_file`` when not empty. Works from a
colcon install and from a pip environment (see ``segmenter_action_options``); without
``ros2 launch``, run it through ``launch.LaunchService`` or a launch_testing test.
"""

import os
import sys
from pathlib import Path
from typing import Optional

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = 'defvos_ros'
EXECUTABLE = 'segmenter'
NODE_NAME = 'defvos'
CONFIG_NAME = 'defvos.yaml'


def _package_prefix() -> Optional[Path]:
    """Return the install prefix of defvos_ros in the ament index, or None."""
    try:
        from ament_index_python.packages import get_package_prefix

        return Path(get_package_prefix(PACKAGE))
    except (ImportError, LookupError, OSError, ValueError):
        # not installed with its ament resource (pip editable install, source tree) or
        # AMENT_PREFIX_PATH unset
        return None


def default_params_file() -> Path:
    """Return the installed config/defvos.yaml, else the one beside this launch file.

    In a colcon install (and a non-editable pip install with AMENT_PREFIX_PATH set) the
    ament index finds share/defvos_ros/config/defvos.yaml. An editable pip install and the
    source tree do not install data_files: there the repo's config/ next to launch/ is used
    (which is also what share/defvos_ros/launch/../config gives in an install).
    """
    prefix = _package_prefix()
    if prefix is not None:
        installed = prefix / 'share' / PACKAGE / 'config' / CONFIG_NAME
        if installed.is_file():
            return installed
    return Path(os.path.abspath(__file__)).parent.parent / 'config' / CONFIG_NAME


def segmenter_action_options() -> dict:
    """Return how to start the node: the colcon executable, or this Python with -m.

    colcon (setup.cfg) installs the console script as <prefix>/lib/defvos_ros/segmenter,
    which is where Node(package=..., executable=...) looks. pip puts console scripts in
    <venv>/bin instead, so there is no lib/defvos_ros/segmenter and Node(package=...) would
    fail: then the node is started as `python -m defvos_ros` with the interpreter running
    this launch file (the one whose environment has defvos_ros installed).
    """
    prefix = _package_prefix()
    if prefix is not None and (prefix / 'lib' / PACKAGE / EXECUTABLE).is_file():
        return {'package': PACKAGE, 'executable': EXECUTABLE}
    return {'executable': sys.executable, 'arguments': ['-m', PACKAGE]}


def _launch_segmenter(context: LaunchContext) -> list:
    def value(name: str) -> str:
        return LaunchConfiguration(name).perform(context).strip()

    overrides = {'use_sim_time': value('use_sim_time').lower() in ('true', '1', 'yes')}
    for name in ('weights', 'backend', 'device'):
        if value(name):
            overrides[name] = value(name)
    namespace = value('namespace').strip('/')
    return [Node(
        name=NODE_NAME,
        namespace=namespace or None,
        parameters=[value('params_file'), overrides],
        remappings=[('image', value('image_topic')), ('seed_mask', value('seed_topic'))],
        output='screen',
        **segmenter_action_options(),
    )]


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments and the segmenter node."""
    arguments = [
        DeclareLaunchArgument('image_topic', default_value='image',
                              description='camera image topic (sensor_msgs/Image; with '
                                          'use_compressed, <image_topic>/compressed)'),
        DeclareLaunchArgument('seed_topic', default_value='seed_mask',
                              description='seed label-map topic (sensor_msgs/Image mono8/16)'),
        DeclareLaunchArgument('params_file', default_value=str(default_params_file()),
                              description='node parameters (YAML keyed by /** or defvos)'),
        DeclareLaunchArgument('weights', default_value='',
                              description='weights file; empty = params_file / shipped student'),
        DeclareLaunchArgument('backend', default_value='',
                              description='torch or onnxruntime; empty = params_file'),
        DeclareLaunchArgument('device', default_value='',
                              description='e.g. cpu, cuda:0; empty = params_file'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node and its topics'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='use /clock as the node clock'),
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_launch_segmenter)])
