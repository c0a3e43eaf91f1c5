"""The logic of ``launch/segment.launch.py``: its arguments and how they become a node action.

Kept out of the launch file (and free of ``launch`` imports) so it is tested everywhere, also
where ROS 2's launch stack is not installed; the launch file only declares ``ARGUMENTS`` and
builds ``launch_ros.actions.Node(**node_action_options(values))``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from defvos_core.config import BACKENDS

PACKAGE = 'defvos_ros'
EXECUTABLE = 'segmenter'
NODE_NAME = 'defvos'
CONFIG_NAME = 'defvos.yaml'
_TRUE, _FALSE = ('true', '1', 'yes', 'on'), ('false', '0', 'no', 'off')


@dataclass(frozen=True)
class LaunchArgument:
    """One ``ros2 launch`` argument: name, default value and description."""

    name: str
    default: str
    description: str


ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument('image_topic', 'image', 'camera image topic (sensor_msgs/Image; with '
                   'use_compressed, <image_topic>/compressed)'),
    LaunchArgument('seed_topic', 'seed_mask',
                   'seed label-map topic (sensor_msgs/Image mono8/16)'),
    LaunchArgument('params_file', '', 'node parameters (YAML keyed by /** or defvos); '
                   'empty = the installed config/defvos.yaml'),
    LaunchArgument('weights', '', 'weights file; empty = params_file / shipped student'),
    LaunchArgument('backend', '', f"{' or '.join(BACKENDS)}; empty = params_file"),
    LaunchArgument('device', '', 'e.g. cpu, cuda:0; empty = params_file'),
    LaunchArgument('namespace', '', 'namespace of the node and its topics'),
    LaunchArgument('use_sim_time', 'false', 'use /clock as the node clock'),
    LaunchArgument('autostart', 'true', 'configure and activate the (lifecycle) node at '
                   'start-up; false hands it to a lifecycle manager'),
)


def _flag(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"launch argument '{name}' is {text!r}; expected true or false")


def node_parameter_overrides(values: dict[str, str]) -> dict[str, Any]:
    """Return the node parameters the launch arguments set (empty ones leave params_file's).

    Raises ValueError naming the argument for a value the node would refuse.
    """
    overrides: dict[str, Any] = {
        'use_sim_time': _flag('use_sim_time', values.get('use_sim_time', 'false')),
        'autostart': _flag('autostart', values.get('autostart', 'true')),
    }
    for name in ('weights', 'backend', 'device'):
        value = values.get(name, '').strip()
        if value:
            overrides[name] = value
    if overrides.get('backend', BACKENDS[0]) not in BACKENDS:
        raise ValueError(f"launch argument 'backend' is {overrides['backend']!r}; expected one "
                         f'of {list(BACKENDS)}')
    return overrides


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
    """Return the installed config/defvos.yaml, else the repository's.

    In a colcon install (and a non-editable pip install with AMENT_PREFIX_PATH set) the
    ament index finds share/defvos_ros/config/defvos.yaml. An editable pip install and the
    source tree do not install data_files: there the repository's config/ is used.
    """
    prefix = _package_prefix()
    if prefix is not None:
        installed = prefix / 'share' / PACKAGE / 'config' / CONFIG_NAME
        if installed.is_file():
            return installed
    return Path(os.path.abspath(__file__)).parent.parent / 'config' / CONFIG_NAME


def segmenter_action_options() -> dict[str, Any]:
    """Return how to start the node: the colcon executable, or this Python with -m.

    colcon (setup.cfg) installs the console script as <prefix>/lib/defvos_ros/segmenter,
    which is where Node(package=..., executable=...) looks. pip puts console scripts in
    <venv>/bin instead, so there is no lib/defvos_ros/segmenter and Node(package=...) would
    fail: then the node is started as `python -m defvos_ros` with the interpreter running
    the launch file (the one whose environment has defvos_ros installed).
    """
    prefix = _package_prefix()
    if prefix is not None and (prefix / 'lib' / PACKAGE / EXECUTABLE).is_file():
        return {'package': PACKAGE, 'executable': EXECUTABLE}
    return {'executable': sys.executable, 'arguments': ['-m', PACKAGE]}


def node_action_options(values: dict[str, str]) -> dict[str, Any]:
    """Return the keyword arguments of ``launch_ros.actions.Node`` for these argument values."""
    params_file = values.get('params_file', '').strip() or str(default_params_file())
    if not Path(params_file).is_file():
        raise ValueError(f"launch argument 'params_file': {params_file} is not a file")
    namespace = values.get('namespace', '').strip().strip('/')
    return dict(
        name=NODE_NAME,
        namespace=namespace or None,
        parameters=[params_file, node_parameter_overrides(values)],
        remappings=[('image', values.get('image_topic', 'image')),
                    ('seed_mask', values.get('seed_topic', 'seed_mask'))],
        output='screen',
        **segmenter_action_options(),
    )
