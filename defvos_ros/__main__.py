"""``python -m defvos_ros [--ros-args ...]``: run the segmenter node (pip environments)."""

import sys

from defvos_ros.node import main

if __name__ == '__main__':
    sys.exit(main())
