"""Unit tests of the ROS-free 3D geometry: back-projection, robust statistics, stamp matching.

The scenes are synthetic with known geometry: a fronto-parallel box face of known size at a
known distance in front of a wall, seen through a known K, so every expected figure is
computed from the scene, not recorded from a run.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from defvos_core.depth.geometry import (ABSENT, NO_DEPTH_POINTS, OK, Intrinsics,
                                        Objects3DConfig, back_project, object_positions)
from defvos_core.depth.stamp_matcher import FUTURE, MATCHED, MISSING, STALE, StampMatcher
from defvos_core.errors import DepthError

K = Intrinsics(fx=300.0, fy=310.0, cx=160.0, cy=120.0)
HEIGHT, WIDTH = 240, 320


def face_scene(x0: float, x1: float, y0: float, y1: float, z: float, wall: float = 2.5,
               value: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Return (labels, depth_m) of a fronto-parallel rectangle [x0, x1] x [y0, y1] at depth z.

    A pixel belongs to the rectangle when its centre's ray hits it; elsewhere the wall.
    """
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    x, y = (u - K.cx) * z / K.fx, (v - K.cy) * z / K.fy
    inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    labels = np.where(inside, value, 0).astype(np.uint8)
    depth = np.where(inside, z, wall).astype(np.float32)
    return labels, depth


def test_back_projection_inverts_the_pinhole_projection():
    points = np.array([[0.3, -0.2, 1.5], [-0.1, 0.4, 0.8], [0.0, 0.0, 2.0]])
    u = K.fx * points[:, 0] / points[:, 2] + K.cx
    v = K.fy * points[:, 1] / points[:, 2] + K.cy
    assert np.allclose(back_project(u, v, points[:, 2], K).T, points, atol=1e-6)


def test_a_box_face_in_front_of_a_wall_is_measured_within_a_centimetre():
    labels, depth = face_scene(-0.25, 0.05, -0.1, 0.1, z=1.2)
    (position,) = object_positions(labels, depth, K, [1]).values()
    assert position.status == OK
    assert np.allclose(position.centroid, [-0.1, 0.0, 1.2], atol=0.01)
    assert np.allclose(position.box_centre, [-0.1, 0.0, 1.2], atol=0.01)
    assert np.allclose(position.box_size, [0.3, 0.2, 0.0], atol=0.02)
    rows, cols = np.nonzero(labels)
    height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
    assert position.valid_points == (height - 4) * (width - 4)  # the 2-px rim is left out


def test_a_mask_that_spills_onto_the_wall_and_noisy_holes_do_not_move_the_result():
    labels, depth = face_scene(0.0, 0.2, 0.0, 0.3, z=0.9)
    truth = object_positions(labels, depth, K, [1])[1]
    spilled = np.zeros_like(labels)
    rows, cols = np.nonzero(labels)
    spilled[rows.min() - 2:rows.max() + 3, cols.min() - 2:cols.max() + 3] = 1  # 2 px too wide
    rng = np.random.default_rng(0)
    noisy = depth.copy()
    holes = rng.random(depth.shape) < 0.2
    noisy[holes] = rng.choice([0.0, np.nan], size=int(holes.sum()))  # no reading (REP 118)
    flyers = rng.random(depth.shape) < 0.01
    noisy[flyers] = 8.0  # stray far readings
    position = object_positions(spilled, noisy, K, [1])[1]
    assert position.status == OK
    assert np.allclose(position.centroid, [0.1, 0.15, 0.9], atol=0.01)
    assert np.allclose(position.box_size, truth.box_size, atol=0.02)
    assert np.allclose(position.box_size, [0.2, 0.3, 0.0], atol=0.02)


def test_several_objects_absent_ones_and_objects_without_readings():
    labels, depth = face_scene(-0.4, -0.1, -0.1, 0.1, z=1.0, value=3)
    far_labels, far_depth = face_scene(0.2, 0.6, -0.2, 0.2, z=2.0, value=7)
    labels = np.where(far_labels > 0, far_labels, labels)
    depth = np.where(far_labels > 0, far_depth, depth)
    dark_labels, _ = face_scene(-0.1, 0.1, 0.3, 0.4, z=1.0, value=9)
    labels = np.where(dark_labels > 0, dark_labels, labels)
    depth = np.where(dark_labels > 0, 0.0, depth).astype(np.float32)  # no reading at all
    positions = object_positions(labels, depth, K, [3, 5, 7, 9])
    assert [positions[v].status for v in (3, 5, 7, 9)] == [OK, ABSENT, OK, NO_DEPTH_POINTS]
    assert np.allclose(positions[3].centroid, [-0.25, 0.0, 1.0], atol=0.01)
    assert np.allclose(positions[7].centroid, [0.4, 0.0, 2.0], atol=0.01)
    assert np.allclose(positions[7].box_size, [0.4, 0.4, 0.0], atol=0.02)
    assert positions[9].valid_points == 0 and positions[9].centroid is None


def test_a_tilted_surface_has_depth_extent():
    """A plane receding with y (a floor seen from above): z spans its known range."""
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    z = 1.0 + 2.0 * v / HEIGHT  # 1 m at the top row to 3 m at the bottom
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    labels[:, 100:220] = 1
    config = Objects3DConfig(extent_percentile=0.0, erosion_px=0, max_stat_points=10**6)
    position = object_positions(labels, z.astype(np.float32), K, [1], config)[1]
    assert position.box_size[2] == pytest.approx(2.0 * (HEIGHT - 1) / HEIGHT, abs=0.02)
    assert position.centroid[2] == pytest.approx(np.median(z[:, 100:220]), abs=0.01)


def test_a_thin_object_is_measured_without_erosion_and_min_points_holds():
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    labels[50:150, 100:103] = 1  # 3 px wide: a 2-px erosion leaves nothing
    depth = np.full((HEIGHT, WIDTH), 1.5, np.float32)
    position = object_positions(labels, depth, K, [1])[1]
    assert position.status == OK and position.valid_points == 300
    assert position.centroid[2] == pytest.approx(1.5)
    strict = object_positions(labels, depth, K, [1], Objects3DConfig(min_points=301))[1]
    assert (strict.status, strict.valid_points) == (NO_DEPTH_POINTS, 300)


def test_large_objects_are_subsampled_for_the_statistics_only():
    labels, depth = face_scene(-0.5, 0.5, -0.35, 0.35, z=1.0)
    config = Objects3DConfig(max_stat_points=1000)
    position = object_positions(labels, depth, K, [1], config)[1]
    assert len(position.points) <= 1000
    assert position.valid_points > 10 * len(position.points)  # the count is not subsampled
    assert np.allclose(position.centroid, [0.0, 0.0, 1.0], atol=0.01)
    # the grid subsample (every 9th row and column here) may miss up to 8 px of the rims
    assert np.allclose(position.box_size[:2], [1.0, 0.7], atol=4 / K.fx + 0.01)


def test_mismatched_depth_and_unusable_intrinsics_are_refused():
    labels, depth = face_scene(0.0, 0.1, 0.0, 0.1, z=1.0)
    with pytest.raises(DepthError, match='depth is 160x240') as error:
        object_positions(labels, depth[:, :160], K, [1])
    assert error.value.kind == 'depth_size'
    assert Intrinsics.from_k([300, 0, 160, 0, 310, 120, 0, 0, 1]) == K
    for k in ([0.0] * 9, [300, 0, 160, 0, float('nan'), 120, 0, 0, 1], [1.0] * 4):
        with pytest.raises(DepthError) as error:
            Intrinsics.from_k(k)
        assert error.value.kind == 'camera_info_invalid'


def test_stamp_matcher_pairs_the_nearest_stamp_within_the_tolerance():
    matcher: StampMatcher[str] = StampMatcher(capacity=3)
    assert matcher.match(1000, 10).outcome == MISSING
    for stamp, name in ((1000, 'a'), (1033, 'b'), (1066, 'c')):
        matcher.push(stamp, name)
    assert (matcher.match(1030, 5).item, matcher.match(1030, 5).offset_ns) == ('b', 3)
    assert matcher.match(1066, 0).outcome == MATCHED
    stale = matcher.match(1200, 10)
    assert (stale.outcome, stale.item, stale.stamp_ns, stale.offset_ns) == (STALE, None, 1066,
                                                                            -134)
    assert matcher.match(900, 10).outcome == FUTURE
    assert matcher.match(1048, 10).outcome == STALE  # between two frames, nearer the older
    assert matcher.match(1051, 10).outcome == FUTURE  # nearer the newer
    matcher.push(1033, 'b2')  # an equal stamp: the last received wins
    assert matcher.match(1033, 0).item == 'b2'
    assert len(matcher) == 3  # bounded: 'a' and 'b' are gone
    assert matcher.match(1000, 10).outcome == FUTURE
    matcher.push(5, 'restart')  # out-of-order stamps (a looped bag) still pair
    assert matcher.match(6, 2).item == 'restart'
    with pytest.raises(ValueError):
        StampMatcher(0)
    matcher.clear()
    assert matcher.match(6, 2).outcome == MISSING


def test_stamp_matcher_waits_for_a_pair_still_on_its_way():
    matcher: StampMatcher[str] = StampMatcher(capacity=4)
    matcher.push(1000, 'earlier')
    late = threading.Timer(0.05, matcher.push, (1040, 'late'))  # arrives after the ask
    late.start()
    assert matcher.match(1040, 0, wait_s=10.0).item == 'late'
    late.join()
    assert matcher.match(1080, 0).outcome == STALE  # no wait asked: answered at once
    assert matcher.match(1015, 0, wait_s=10.0).outcome == STALE  # a newer one is held
