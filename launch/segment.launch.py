"""Launch the defvos segmenter node.

    ros2 launch defvos_ros segment.launch.py [image_topic:=/camera/image_raw]
        [seed_topic:=seed_mask] [params_file:=my.yaml] [weights:=student.pt]
        [backend:=torch|onnxruntime] [device:=cuda:0] [namespace:=robot1] [use_sim_time:=true]
        [autostart:=false]

The node is a lifecycle node: with autostart (default) it configures and activates itself;
autostart:=false leaves it unconfigured for a lifecycle manager.

Masks appear on /defvos/masks, or /<namespace>/defvos/masks when a namespace is given.
The arguments and their mapping to node parameters live in ``defvos_ros.launch_arguments``.
"""

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from defvos_ros.launch_arguments import ARGUMENTS, node_action_options


def _launch_segmenter(context: LaunchContext) -> list:
    values = {argument.name: LaunchConfiguration(argument.name).perform(context)
              for argument in ARGUMENTS}
    return [Node(**node_action_options(values))]


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments and the segmenter node."""
    arguments = [DeclareLaunchArgument(argument.name, default_value=argument.default,
                                       description=argument.description)
                 for argument in ARGUMENTS]
    return LaunchDescription(arguments + [OpaqueFunction(function=_launch_segmenter)])
