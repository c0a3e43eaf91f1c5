"""Tests for defvos_ros.image_conversion on small real messages."""

import array

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from defvos_ros.image_conversion import (
    SUPPORTED_IMAGE_ENCODINGS,
    SUPPORTED_LABEL_ENCODINGS,
    ImageConversionError,
    compressed_to_rgb,
    image_to_labels,
    image_to_numpy,
    image_to_rgb,
    numpy_to_image,
    rgb_to_compressed,
)

HEIGHT, WIDTH = 6, 8
RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, (HEIGHT, WIDTH, 1), dtype=np.uint8)
MONO8 = RNG.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)
MONO16 = RNG.integers(0, 65536, (HEIGHT, WIDTH), dtype=np.uint16)


def _rgb_to_yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """Independent BT.601 limited-range RGB -> packed 4:2:2 ((H, W, 2) uint8)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    y, u, v = (np.clip(np.rint(c), 0, 255).astype(np.uint8) for c in (y, u, v))
    chroma = np.empty_like(y)
    chroma[:, 0::2] = u[:, 0::2]  # pixel pairs share the left pixel's chroma
    chroma[:, 1::2] = v[:, 0::2]
    pair = (chroma, y) if order == 'uyvy' else (y, chroma)
    return np.stack(pair, axis=-1)


# Pixel pairs with equal colour, so 4:2:2 chroma subsampling loses nothing.
RGB_PAIRS = np.repeat(RGB[:, ::2], 2, axis=1)

# encoding -> (array in that encoding, expected RGB, max abs RGB error)
CASES = {
    'rgb8': (RGB, RGB, 0),
    'bgr8': (RGB[..., ::-1], RGB, 0),
    '8UC3': (RGB[..., ::-1], RGB, 0),
    'rgba8': (np.concatenate([RGB, ALPHA], axis=2), RGB, 0),
    'bgra8': (np.concatenate([RGB[..., ::-1], ALPHA], axis=2), RGB, 0),
    'mono8': (MONO8, np.repeat(MONO8[..., None], 3, axis=2), 0),
    '8UC1': (MONO8, np.repeat(MONO8[..., None], 3, axis=2), 0),
    'mono16': (MONO16, np.repeat((MONO16 >> 8).astype(np.uint8)[..., None], 3, axis=2), 0),
    'yuv422': (_rgb_to_yuv422(RGB_PAIRS, 'uyvy'), RGB_PAIRS, 3),
    'uyvy': (_rgb_to_yuv422(RGB_PAIRS, 'uyvy'), RGB_PAIRS, 3),
    'yuv422_yuy2': (_rgb_to_yuv422(RGB_PAIRS, 'yuyv'), RGB_PAIRS, 3),
    'yuyv': (_rgb_to_yuv422(RGB_PAIRS, 'yuyv'), RGB_PAIRS, 3),
}


def _raw_message(encoding, height, width, step, data, is_bigendian=0) -> Image:
    return Image(height=height, width=width, encoding=encoding, step=step,
                 is_bigendian=is_bigendian, data=bytes(data))


def test_every_supported_encoding_has_a_case():
    assert set(CASES) == set(SUPPORTED_IMAGE_ENCODINGS)


@pytest.mark.parametrize('encoding', sorted(CASES))
def test_round_trip_and_rgb(encoding):
    pixels, expected_rgb, tolerance = CASES[encoding]
    msg = numpy_to_image(pixels, encoding)
    bytes_per_pixel = pixels.dtype.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1)
    assert (msg.height, msg.width, msg.step) == (HEIGHT, WIDTH, WIDTH * bytes_per_pixel)
    assert msg.is_bigendian == 0 and len(msg.data) == msg.step * HEIGHT

    back = image_to_numpy(msg)
    assert back.dtype == pixels.dtype and np.array_equal(back, pixels)

    rgb = image_to_rgb(msg)
    assert rgb.shape == (HEIGHT, WIDTH, 3) and rgb.dtype == np.uint8
    error = np.abs(rgb.astype(np.int16) - expected_rgb.astype(np.int16)).max()
    assert error <= tolerance


@pytest.mark.parametrize('encoding, order', [('yuv422', 'uyvy'), ('yuv422_yuy2', 'yuyv')])
def test_yuv422_matches_opencv_encoder(encoding, order):
    if not hasattr(cv2, 'COLOR_RGB2YUV_UYVY'):
        pytest.skip('this OpenCV has no RGB -> packed YUV 4:2:2 conversion')
    code = cv2.COLOR_RGB2YUV_UYVY if order == 'uyvy' else cv2.COLOR_RGB2YUV_YUYV
    packed = cv2.cvtColor(RGB_PAIRS, code)
    rgb = image_to_rgb(numpy_to_image(packed, encoding))
    assert np.abs(rgb.astype(np.int16) - RGB_PAIRS.astype(np.int16)).max() <= 3


def test_16uc1_round_trip():
    assert np.array_equal(image_to_numpy(numpy_to_image(MONO16, '16UC1')), MONO16)


def test_header_is_copied():
    header = Header(stamp=Time(sec=12, nanosec=345), frame_id='camera_optical')
    msg = numpy_to_image(MONO8, 'mono8', header=header)
    header.frame_id = 'changed'
    assert msg.header.frame_id == 'camera_optical'
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 345)


def test_data_field_is_array_array_and_rgb8_is_zero_copy():
    msg = numpy_to_image(RGB, 'rgb8')
    # rclpy stores uint8[] as array.array('B'), even when bytes are assigned.
    assert isinstance(msg.data, array.array) and msg.data.typecode == 'B'
    assert isinstance(_raw_message('rgb8', 1, 1, 3, b'abc').data, array.array)
    rgb = image_to_rgb(msg)
    assert np.shares_memory(rgb, np.frombuffer(msg.data, np.uint8))
    assert np.shares_memory(image_to_numpy(msg), np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'mono8', 'mono16', 'yuv422'])
def test_step_padding_is_ignored(encoding):
    pixels = CASES[encoding][0]
    row_bytes = pixels[0].nbytes
    step = row_bytes + 5  # odd pad: 16-bit rows are then misaligned too
    padded = np.full((HEIGHT, step), 0xAB, dtype=np.uint8)  # garbage in the pad
    padded[:, :row_bytes] = pixels.reshape(HEIGHT, -1).view(np.uint8)
    msg = _raw_message(encoding, HEIGHT, WIDTH, step, padded.tobytes())

    back = image_to_numpy(msg)
    assert np.array_equal(back, pixels)
    assert np.shares_memory(back, np.frombuffer(msg.data, np.uint8))  # no copy
    expected_rgb = image_to_rgb(numpy_to_image(pixels, encoding))
    assert np.array_equal(image_to_rgb(msg), expected_rgb)


def test_data_longer_than_step_times_height_is_accepted():
    msg = _raw_message('mono8', HEIGHT, WIDTH, WIDTH, MONO8.tobytes() + b'\xff' * 7)
    assert np.array_equal(image_to_numpy(msg), MONO8)


@pytest.mark.parametrize('encoding', ['mono16', '16UC1'])
def test_big_endian_16bit(encoding):
    msg = _raw_message(encoding, HEIGHT, WIDTH, WIDTH * 2, MONO16.astype('>u2').tobytes(),
                       is_bigendian=1)
    back = image_to_numpy(msg)
    assert back.dtype == np.uint16 and back.dtype.isnative
    assert np.array_equal(back, MONO16)
    if encoding == 'mono16':
        assert np.array_equal(image_to_rgb(msg)[..., 0], (MONO16 >> 8).astype(np.uint8))


def test_labels_from_every_label_encoding():
    labels8 = np.zeros((HEIGHT, WIDTH), np.uint8)
    labels8[1:3, 2:5] = 1
    labels8[4:, :2] = 2
    for encoding in SUPPORTED_LABEL_ENCODINGS:
        dtype = np.uint16 if '16' in encoding else np.uint8
        source = labels8.astype(dtype)
        if dtype == np.uint16:
            source[0, 0] = 300  # ids above 255 survive 16-bit label maps
        labels = image_to_labels(numpy_to_image(source, encoding))
        assert labels.dtype == np.int32 and labels.shape == (HEIGHT, WIDTH)
        assert np.array_equal(labels, source.astype(np.int32))


@pytest.mark.parametrize('fmt', ['jpeg', 'png'])
def test_compressed_round_trip(fmt):
    header = Header(frame_id='camera')
    msg = rgb_to_compressed(RGB_PAIRS, fmt, header=header)
    assert isinstance(msg, CompressedImage) and msg.header.frame_id == 'camera'
    assert msg.format == f'rgb8; {fmt} compressed bgr8'
    rgb = compressed_to_rgb(msg)
    assert rgb.shape == RGB_PAIRS.shape and rgb.dtype == np.uint8
    if fmt == 'png':
        assert np.array_equal(rgb, RGB_PAIRS)
    else:  # lossy: compare the image means per channel (catches swapped channels)
        means = rgb.reshape(-1, 3).mean(axis=0)
        assert np.abs(means - RGB_PAIRS.reshape(-1, 3).mean(axis=0)).max() < 10


def test_compressed_plain_format_string_decodes():
    ok, encoded = cv2.imencode('.png', RGB[..., ::-1])
    msg = CompressedImage(format='png', data=encoded.tobytes())
    assert np.array_equal(compressed_to_rgb(msg), RGB)


# --- malformed input -------------------------------------------------------------------

@pytest.mark.parametrize('msg, match', [
    (_raw_message('64FC1', 2, 2, 16, bytes(32)), "unsupported image encoding '64FC1'"),
    (_raw_message('rgb8', 2, 2, 6, bytes(11)),
     r'data has 11 bytes, expected step\*height = 6\*2 = 12'),
    (_raw_message('rgb8', 2, 4, 10, bytes(20)),
     r'step 10 is smaller than width\*bytes_per_pixel = 4\*3 = 12'),
    (_raw_message('mono16', 2, 4, 4, bytes(8)),
     r'step 4 is smaller than width\*bytes_per_pixel = 4\*2 = 8'),
    (_raw_message('rgb8', 0, 0, 0, b''), r'image is empty \(0x0'),
    (_raw_message('mono8', 3, 0, 0, b''), r'image is empty \(0x3'),
    (_raw_message('yuv422', 2, 3, 6, bytes(12)), "'yuv422' needs an even width.*width=3"),
    (_raw_message('yuyv', 2, 5, 10, bytes(20)), "'yuyv' needs an even width.*width=5"),
])
def test_malformed_image_raises(msg, match):
    with pytest.raises(ImageConversionError, match=match):
        image_to_numpy(msg)
    with pytest.raises(ImageConversionError, match=match):
        image_to_rgb(msg)


def test_rgb_of_non_colour_encoding_raises():
    msg = numpy_to_image(MONO16, '16UC1')
    with pytest.raises(ImageConversionError, match="unsupported image encoding '16UC1' for RGB"):
        image_to_rgb(msg)


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'yuv422', '32FC1'])
def test_labels_with_wrong_encoding_raise(encoding):
    msg = _raw_message(encoding, 2, 2, 6, bytes(12))
    with pytest.raises(ImageConversionError, match=f"label map .* got '{encoding}'"):
        image_to_labels(msg)


@pytest.mark.parametrize('pixels, encoding, match', [
    (RGB, 'mono8', r"'mono8' needs a \(H, W\) uint8 array, got shape \(6, 8, 3\) uint8"),
    (MONO8, 'rgb8', r"'rgb8' needs a \(H, W, 3\) uint8 array, got shape \(6, 8\)"),
    (MONO8, 'mono16', r"'mono16' needs a \(H, W\) uint16 array, got .* uint8"),
    (RGB.astype(np.float32), 'rgb8', r'got shape \(6, 8, 3\) float32'),
    (RGB, 'yuv422', r"'yuv422' needs a \(H, W, 2\) uint8 array"),
    (np.zeros((3, 5, 2), np.uint8), 'yuv422', "'yuv422' needs an even width.*width=5"),
    (np.zeros((0, 0), np.uint8), 'mono8', r'cannot build an empty image \(0x0'),
    (MONO8, 'bayer_rggb8', "unsupported image encoding 'bayer_rggb8'"),
])
def test_numpy_to_image_rejects_mismatched_arrays(pixels, encoding, match):
    with pytest.raises(ImageConversionError, match=match):
        numpy_to_image(pixels, encoding)


@pytest.mark.parametrize('data, fmt, match', [
    (b'', 'jpeg', r"CompressedImage data is empty \(format 'jpeg'\)"),
    (b'\xff\xd8\xff\xe0 not a jpeg', 'jpeg',
     r"could not decode CompressedImage \(format 'jpeg', 15 bytes\)"),
    (bytes(64), 'png', r"could not decode CompressedImage \(format 'png', 64 bytes\)"),
    (b'\x00' * 12 + b'\x89PNG', '16UC1; compressedDepth png', 'compressedDepth'),
])
def test_bad_compressed_image_raises(data, fmt, match):
    with pytest.raises(ImageConversionError, match=match):
        compressed_to_rgb(CompressedImage(format=fmt, data=data))


def test_rgb_to_compressed_rejects_bad_input():
    with pytest.raises(ImageConversionError, match="unsupported compression format 'bmp'"):
        rgb_to_compressed(RGB, 'bmp')
    with pytest.raises(ImageConversionError, match=r'needs an \(H, W, 3\) uint8 RGB array'):
        rgb_to_compressed(MONO8)
