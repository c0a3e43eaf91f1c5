"""Conversions between ROS 2 image messages and numpy arrays (a small cv_bridge replacement).

We do not use cv_bridge: the PyPI ``cv-bridge`` wheel calls the removed ``ndarray.tostring``
and the distro cv_bridge breaks under NumPy 2 (ros-perception/vision_opencv#535). This module
needs only numpy and OpenCV.

Notes on rclpy messages (checked against the Kilted wheels):

* ``Image.data`` and ``CompressedImage.data`` are always ``array.array('B')``, both on
  messages built in Python (the setter converts bytes, lists and arrays) and on received
  (deserialized) messages. ``array.array`` exports the buffer protocol, so ``np.frombuffer``
  gives a zero-copy, *writable* view that keeps the message buffer alive.
* With the default ``ROS_PYTHON_CHECK_FIELDS`` unset, the ``data`` setter always copies
  (``array.array('B', value)``): a bytes value is copied with one memcpy, but a numpy array
  would be iterated element by element (hundreds of ms per HD frame). ``numpy_to_image``
  therefore hands the setter an ``array.array`` built with ``frombytes``.
"""

from __future__ import annotations

import array
import io
import sys
from typing import Dict, NamedTuple, Optional

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from defvos_core.errors import InputError


class ImageConversionError(InputError):
    """A message or array cannot be converted; ``kind`` says why.

    Kinds: ``image_encoding`` (unsupported encoding), ``image_empty`` (zero width or
    height), ``image_data`` (sizes, step or data length inconsistent), ``image_too_large``
    (more pixels or compressed bytes than allowed), ``compressed`` (a CompressedImage that
    cannot be decoded).
    """

    def __init__(self, message: str, kind: str = 'image_data') -> None:
        super().__init__(kind, message)


class _Layout(NamedTuple):
    dtype: np.dtype  # element type, native byte order
    channels: int  # elements per pixel; 1 means an (H, W) array


_U8 = np.dtype(np.uint8)
_U16 = np.dtype(np.uint16)

# Memory layout of each encoding image_to_numpy understands. ROS "yuv422" is UYVY and
# "yuv422_yuy2" is YUYV (sensor_msgs/image_encodings.hpp); both hold 2 bytes per pixel.
_LAYOUTS: Dict[str, _Layout] = {
    'mono8': _Layout(_U8, 1),
    '8UC1': _Layout(_U8, 1),
    'mono16': _Layout(_U16, 1),
    '16UC1': _Layout(_U16, 1),
    'rgb8': _Layout(_U8, 3),
    'bgr8': _Layout(_U8, 3),
    '8UC3': _Layout(_U8, 3),
    'rgba8': _Layout(_U8, 4),
    'bgra8': _Layout(_U8, 4),
    'yuv422': _Layout(_U8, 2),
    'uyvy': _Layout(_U8, 2),
    'yuv422_yuy2': _Layout(_U8, 2),
    'yuyv': _Layout(_U8, 2),
    '32FC1': _Layout(np.dtype(np.float32), 1),  # depth in metres (REP 118)
}
_YUV422_ENCODINGS = ('yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv')

# Encodings -> cv2.cvtColor code producing RGB (None: already RGB, a view is returned).
_TO_RGB: Dict[str, Optional[int]] = {
    'rgb8': None,
    'bgr8': cv2.COLOR_BGR2RGB,
    '8UC3': cv2.COLOR_BGR2RGB,
    'mono8': cv2.COLOR_GRAY2RGB,
    '8UC1': cv2.COLOR_GRAY2RGB,
    'mono16': cv2.COLOR_GRAY2RGB,  # after >> 8
    'rgba8': cv2.COLOR_RGBA2RGB,
    'bgra8': cv2.COLOR_BGRA2RGB,
    'yuv422': cv2.COLOR_YUV2RGB_UYVY,
    'uyvy': cv2.COLOR_YUV2RGB_UYVY,
    'yuv422_yuy2': cv2.COLOR_YUV2RGB_YUY2,
    'yuyv': cv2.COLOR_YUV2RGB_YUY2,
}

SUPPORTED_IMAGE_ENCODINGS = tuple(_TO_RGB)
"""Encodings accepted by image_to_rgb."""
SUPPORTED_LABEL_ENCODINGS = ('mono8', '8UC1', 'mono16', '16UC1')
"""Encodings accepted by image_to_labels (0 = background, k = object k)."""

_HOST_IS_BIG_ENDIAN = sys.byteorder == 'big'
_COMPRESSED_EXTENSIONS = {'jpeg': '.jpg', 'jpg': '.jpg', 'png': '.png'}


def _layout(encoding: str) -> _Layout:
    try:
        return _LAYOUTS[encoding]
    except KeyError:
        raise ImageConversionError(
            f"unsupported image encoding '{encoding}'; expected one of "
            f'{sorted(_LAYOUTS)}', 'image_encoding') from None


def _buffer_as_uint8(data) -> np.ndarray:
    """1-D uint8 view of a message's ``data`` (array.array or bytes); copies only lists."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:  # a plain sequence of ints, e.g. a list
        return np.asarray(data, dtype=np.uint8)


def check_pixels(width: int, height: int, max_pixels: Optional[int], what: str) -> None:
    """Raise ImageConversionError (``image_too_large``) beyond ``max_pixels`` (None: no cap)."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageConversionError(
            f'{what} is {width}x{height} = {width * height} pixels, more than the '
            f'{max_pixels} allowed (parameter max_image_pixels)', 'image_too_large')


def image_to_numpy(msg: Image) -> np.ndarray:
    """View a sensor_msgs/Image as an array in the message's own encoding and channel order.

    Returns (H, W) for single-channel encodings, (H, W, C) otherwise ((H, W, 2) for the
    YUV 4:2:2 encodings). The result is a view sharing memory with ``msg.data`` (row
    padding from ``step`` is sliced away, not copied) unless 16-bit data has the
    non-native byte order, in which case it is byteswapped into a new array. Accepts
    SUPPORTED_IMAGE_ENCODINGS, SUPPORTED_LABEL_ENCODINGS and 32FC1 (depth).
    """
    encoding = msg.encoding
    layout = _layout(encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageConversionError(
            f"image is empty ({width}x{height}, encoding '{encoding}'); "
            'expected width and height > 0', 'image_empty')
    if encoding in _YUV422_ENCODINGS and width % 2:
        raise ImageConversionError(
            f"encoding '{encoding}' needs an even width (two pixels share one U/V pair), "
            f'got width={width}')
    bytes_per_pixel = layout.dtype.itemsize * layout.channels
    row_bytes = width * bytes_per_pixel
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than width*bytes_per_pixel = {width}*{bytes_per_pixel} "
            f"= {row_bytes} for encoding '{encoding}'")
    flat = _buffer_as_uint8(msg.data)
    needed = step * height
    if flat.size < needed:
        raise ImageConversionError(
            f'image data has {flat.size} bytes, expected step*height = {step}*{height} '
            f"= {needed} (encoding '{encoding}', width {width})")

    rows = flat[:needed].reshape(height, step)[:, :row_bytes]  # (H, W*bytes_per_pixel)
    dtype = layout.dtype
    if dtype.itemsize > 1:
        big_endian = bool(msg.is_bigendian)
        dtype = dtype.newbyteorder('>' if big_endian else '<')
        # Viewing a padded (non-contiguous) row block works: its last axis is contiguous.
        pixels = rows.view(dtype)
        if big_endian != _HOST_IS_BIG_ENDIAN:
            pixels = pixels.astype(layout.dtype)  # byteswap into a native-order copy
    else:
        pixels = rows
    if layout.channels == 1:
        return pixels.reshape(height, width)
    return pixels.reshape(height, width, layout.channels)


def image_to_rgb(msg: Image, max_pixels: Optional[int] = None) -> np.ndarray:
    """Convert a sensor_msgs/Image to an (H, W, 3) uint8 RGB array.

    rgb8 returns a zero-copy view of ``msg.data`` (writable; copy before modifying if the
    message must stay intact); other encodings are converted into a new array. mono16 keeps
    the high byte; 8UC3 is read as bgr8 and 8UC1 as mono8 (OpenCV conventions). Images of
    more than ``max_pixels`` pixels are refused before any conversion.
    """
    check_pixels(int(msg.width), int(msg.height), max_pixels, 'image')
    if msg.encoding not in _TO_RGB:
        raise ImageConversionError(
            f"unsupported image encoding '{msg.encoding}' for RGB conversion; expected one of "
            f'{list(SUPPORTED_IMAGE_ENCODINGS)}', 'image_encoding')
    pixels = image_to_numpy(msg)
    code = _TO_RGB[msg.encoding]
    if code is None:
        return pixels
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    return cv2.cvtColor(pixels, code)


def image_to_labels(msg: Image) -> np.ndarray:
    """Convert a seed-mask message to an (H, W) int32 label map (0 = background, k = object k).

    Accepts SUPPORTED_LABEL_ENCODINGS only: a colour image is not a label map.
    """
    if msg.encoding not in SUPPORTED_LABEL_ENCODINGS:
        raise ImageConversionError(
            f"label map must have one of the encodings {list(SUPPORTED_LABEL_ENCODINGS)}, "
            f"got '{msg.encoding}'", 'image_encoding')
    return image_to_numpy(msg).astype(np.int32)


def _copy_header(header: Header) -> Header:
    stamp = Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec)
    return Header(stamp=stamp, frame_id=header.frame_id)


def _bytes_array(pixels: np.ndarray) -> array.array:
    """array.array('B') with the bytes of ``pixels`` (one memcpy; setter-friendly)."""
    data = array.array('B')
    data.frombytes(np.ascontiguousarray(pixels).reshape(-1).view(np.uint8))
    return data


def numpy_to_image(array_: np.ndarray, encoding: str,
                   header: Optional[Header] = None) -> Image:
    """Build a sensor_msgs/Image from an array laid out as ``encoding`` requires.

    mono8/8UC1 need (H, W) uint8, mono16/16UC1 (H, W) uint16, rgb8/bgr8/8UC3 (H, W, 3)
    uint8, rgba8/bgra8 (H, W, 4) uint8, and the YUV 4:2:2 encodings (H, W, 2) uint8 with
    even W. The message is little-endian (is_bigendian = 0) with unpadded rows; ``header``
    is copied, not shared.
    """
    layout = _layout(encoding)
    pixels = np.asarray(array_)
    if layout.channels == 1:
        expected_shape = '(H, W)'
        shape_ok = pixels.ndim == 2
    else:
        expected_shape = f'(H, W, {layout.channels})'
        shape_ok = pixels.ndim == 3 and pixels.shape[2] == layout.channels
    dtype_ok = (pixels.dtype.kind == layout.dtype.kind
                and pixels.dtype.itemsize == layout.dtype.itemsize)
    if not (shape_ok and dtype_ok):
        raise ImageConversionError(
            f"encoding '{encoding}' needs a {expected_shape} {layout.dtype} array, got shape "
            f'{pixels.shape} {pixels.dtype}')
    height, width = pixels.shape[:2]
    if height == 0 or width == 0:
        raise ImageConversionError(
            f"cannot build an empty image ({width}x{height}, encoding '{encoding}')")
    if encoding in _YUV422_ENCODINGS and width % 2:
        raise ImageConversionError(
            f"encoding '{encoding}' needs an even width (two pixels share one U/V pair), "
            f'got width={width}')
    if layout.dtype.itemsize > 1:
        pixels = pixels.astype(layout.dtype.newbyteorder('<'), copy=False)

    msg = Image()
    if header is not None:
        msg.header = _copy_header(header)
    msg.height = height
    msg.width = width
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = width * layout.channels * layout.dtype.itemsize
    msg.data = _bytes_array(pixels)
    return msg


def compressed_size(encoded: np.ndarray) -> tuple[int, int]:
    """Return the (width, height) a JPEG/PNG/... declares, read from its header only."""
    try:
        with PILImage.open(io.BytesIO(encoded.tobytes())) as image:
            return image.size
    except PILImage.DecompressionBombError as error:
        raise ImageConversionError(f'CompressedImage canvas: {error}',
                                   'image_too_large') from error
    except (OSError, ValueError) as error:
        raise ImageConversionError(f'could not decode CompressedImage ({encoded.size} bytes): '
                                   f'its header is not a readable image ({error})',
                                   'compressed') from error


def compressed_to_rgb(msg: CompressedImage, max_pixels: Optional[int] = None,
                      max_bytes: Optional[int] = None) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (JPEG, PNG, ...) to an (H, W, 3) uint8 RGB array.

    The codec is detected from the data; ``format`` (e.g. "jpeg", "png",
    "rgb8; jpeg compressed bgr8") is only used to reject compressedDepth images. With caps,
    more than ``max_bytes`` of data or a declared canvas of more than ``max_pixels`` is
    refused before decoding (a small PNG can declare a huge canvas).
    """
    fmt = msg.format
    if 'compresseddepth' in fmt.lower():
        raise ImageConversionError(
            f"CompressedImage format '{fmt}' is a compressedDepth image, expected a colour "
            'image (jpeg or png)', 'compressed')
    encoded = _buffer_as_uint8(msg.data)
    if encoded.size == 0:
        raise ImageConversionError(f"CompressedImage data is empty (format '{fmt}')",
                                   'compressed')
    if max_bytes is not None and encoded.size > max_bytes:
        raise ImageConversionError(
            f'CompressedImage has {encoded.size} bytes, more than the {max_bytes} allowed '
            '(parameter max_compressed_bytes)', 'image_too_large')
    if max_pixels is not None:
        check_pixels(*compressed_size(encoded), max_pixels, 'CompressedImage canvas')
    try:
        bgr = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    except cv2.error as error:
        raise ImageConversionError(
            f"could not decode CompressedImage (format '{fmt}', {encoded.size} bytes): "
            f'{error}', 'compressed') from error
    if bgr is None:
        raise ImageConversionError(
            f"could not decode CompressedImage (format '{fmt}', {encoded.size} bytes): "
            'data is corrupt or not an image', 'compressed')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def rgb_to_compressed(rgb: np.ndarray, fmt: str = 'jpeg', header: Optional[Header] = None,
                      *, jpeg_quality: int = 90) -> CompressedImage:
    """Encode an (H, W, 3) uint8 RGB array as a sensor_msgs/CompressedImage.

    ``fmt`` is "jpeg" (or "jpg") or "png"; the message format follows
    compressed_image_transport, e.g. "rgb8; jpeg compressed bgr8".
    """
    codec = fmt.lower()
    if codec not in _COMPRESSED_EXTENSIONS:
        raise ImageConversionError(
            f"unsupported compression format '{fmt}'; expected one of "
            f'{sorted(_COMPRESSED_EXTENSIONS)}')
    pixels = np.asarray(rgb)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ImageConversionError(
            f'rgb_to_compressed needs an (H, W, 3) uint8 RGB array, got shape {pixels.shape} '
            f'{pixels.dtype}')
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ImageConversionError(
            f'cannot compress an empty image ({pixels.shape[1]}x{pixels.shape[0]})')
    extension = _COMPRESSED_EXTENSIONS[codec]
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if extension == '.jpg' else []
    ok, encoded = cv2.imencode(extension, cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageConversionError(f"OpenCV failed to encode a {pixels.shape} image as '{fmt}'")

    msg = CompressedImage()
    if header is not None:
        msg.header = _copy_header(header)
    msg.format = f"rgb8; {'jpeg' if extension == '.jpg' else 'png'} compressed bgr8"
    msg.data = _bytes_array(encoded)
    return msg
