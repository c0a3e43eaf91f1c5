"""``python -m defvos_ros``: run the segmenter node (same as ``ros2 run defvos_ros segmenter``)."""

from defvos_ros.node import entry_point

if __name__ == '__main__':
    entry_point()
