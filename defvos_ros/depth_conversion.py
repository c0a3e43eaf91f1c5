"""Depth images and calibration messages -> depth pixels with their unit, and intrinsics.

Depth follows REP 118: ``16UC1`` (also ``mono16``) in millimetres or ``32FC1`` in metres, 0
or NaN where the sensor has no reading. The image must be aligned to the colour frame (same
size, same optical frame), as RealSense's ``aligned_depth_to_color``, ZED's and OAK-D's
aligned depth are. Problems raise `DepthError` with a kind the node counts and warns about.
"""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from defvos_core.depth.geometry import Intrinsics
from defvos_core.errors import DepthError
from defvos_ros.image_conversion import ImageConversionError, image_to_numpy

#: Depth encodings and the factor from their unit to metres.
DEPTH_ENCODINGS = {'16UC1': 1e-3, 'mono16': 1e-3, '32FC1': 1.0}


def depth_pixels(msg: Image, shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Return a depth image as ((H, W) pixels in its own unit, metres per unit).

    ``shape`` is the colour frame's (H, W). The pixels are a view of the message's data
    (uint16 or float32), not converted: the 3D stage reads only the pixels under objects.
    """
    scale = DEPTH_ENCODINGS.get(msg.encoding)
    if scale is None:
        raise DepthError('depth_encoding', f"depth encoding '{msg.encoding}' is not supported; "
                         f'expected one of {sorted(DEPTH_ENCODINGS)} (REP 118: 16UC1 '
                         'millimetres, 32FC1 metres)')
    if (int(msg.height), int(msg.width)) != tuple(shape):
        raise DepthError('depth_size', f'depth image is {msg.width}x{msg.height} but the colour '
                         f'image is {shape[1]}x{shape[0]}; expected depth aligned to the colour '
                         "frame (e.g. RealSense 'aligned_depth_to_color/image_raw')")
    try:
        return image_to_numpy(msg), scale
    except ImageConversionError as error:
        raise DepthError('depth_data', f'depth image: {error}') from error


def camera_intrinsics(msg: CameraInfo, shape: tuple[int, int]) -> Intrinsics:
    """Return the K of a CameraInfo; DepthError when zero or made for another image size.

    ``shape`` is the colour frame's (H, W); a CameraInfo that states no size (0 x 0) is
    taken as it is.
    """
    size = (int(msg.height), int(msg.width))
    if size != (0, 0) and size != tuple(shape):
        raise DepthError('camera_info_size', f'CameraInfo is for {size[1]}x{size[0]} images but '
                         f'the colour image is {shape[1]}x{shape[0]}; expected the colour '
                         "camera's calibration (e.g. RealSense 'color/camera_info')")
    return Intrinsics.from_k(msg.k)
