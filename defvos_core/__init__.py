"""defvos core: real-time video object segmentation with a distilled deformable-attention student.

No ROS imports anywhere in this package.
"""

__version__ = "0.1.0"
