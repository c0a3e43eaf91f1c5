"""The overlay a person looks at: a see-through tint, an outline and the id of each object."""

from __future__ import annotations

import numpy as np

from defvos_core.label_boxes import label_boxes
from defvos_core.overlay import OUTLINE, PALETTE, overlay


def scene() -> tuple[np.ndarray, np.ndarray]:
    """Return a textured 240x320 frame with object 1 (a square) and object 3 (a bar)."""
    rng = np.random.default_rng(0)
    frame = rng.integers(40, 216, (240, 320, 3), dtype=np.uint8)
    labels = np.zeros((240, 320), np.uint8)
    labels[100:200, 60:160] = 1
    labels[20:40, 200:300] = 3
    return frame, labels


def test_fill_is_blended_not_opaque():
    frame, labels = scene()
    drawn = overlay(frame, labels, alpha=0.35)
    inner = (slice(150, 190), slice(100, 150))  # inside object 1, away from outline and text
    expected = 0.65 * frame[inner].astype(np.float32) + 0.35 * PALETTE[1].astype(np.float32)
    assert np.abs(drawn[inner].astype(np.float32) - expected).max() <= 1.0
    assert drawn[inner].std() > 10  # the frame's texture shows through
    background = labels == 0
    background[90:210, 50:170] = background[10:50, 190:310] = False  # away from the objects
    assert np.array_equal(drawn[background], frame[background])


def test_outline_and_id_are_drawn():
    frame, labels = scene()
    drawn = overlay(frame, labels, names={3: 'cup'})
    edge = drawn[150, 60]  # left edge of object 1, mid-height
    assert np.array_equal(edge, OUTLINE[1])
    assert np.array_equal(drawn[199, 110], OUTLINE[1])  # its bottom edge
    # the ids sit on a box of the object's colour at the top-left of its box
    for value, (x0, y0) in ((1, (60, 100)), (3, (200, 20))):
        corner = drawn[y0 + 1:y0 + 6, x0 + 1:x0 + 4].reshape(-1, 3)
        assert any(np.array_equal(pixel, PALETTE[value]) for pixel in corner), value
    wide = overlay(frame, labels, names={3: 'a much longer name'})
    assert not np.array_equal(wide[20:40, 200:300], drawn[20:40, 200:300])  # the text differs


def test_label_boxes_match_the_pixels():
    rng = np.random.default_rng(1)
    labels = np.zeros((60, 80), np.uint8)
    for value in (1, 2, 7):
        y, x = rng.integers(0, 50), rng.integers(0, 70)
        labels[y:y + rng.integers(1, 10), x:x + rng.integers(1, 10)] = value
    labels[59, 79] = 2  # a stray pixel in the corner stretches object 2's box
    boxes = label_boxes(labels, [1, 2, 7, 9])
    for value in (1, 2, 7):
        ys, xs = np.nonzero(labels == value)
        assert boxes[value] == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert 9 not in boxes
