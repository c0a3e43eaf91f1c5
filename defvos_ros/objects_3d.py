"""The node's 3D stage: pairs each tracked colour frame with a depth frame and measures objects.

The executor hands it depth images and CameraInfo (O(1): stored, nothing converted); the
worker thread calls `Objects3DStage.measure` after a frame's masks are published. Every
outcome is counted (``counts``, shown on /diagnostics) and every problem warned about through
the node's throttled `InputWarnings`:

- the frame has no position at all (each object says why) when no depth frame lies within
  the tolerance (``depth_missing``: none received yet; ``depth_stale`` / ``depth_future``:
  the nearest is older / newer), when the paired depth frame is unusable (``depth_encoding``,
  ``depth_size``, ``depth_data``), or when the calibration is (``camera_info_missing``,
  ``camera_info_invalid``, ``camera_info_size``);
- an object without enough depth readings under it has no position (``depth_no_points``,
  counted and warned, not a rejected input); an object absent from the mask has none either.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from defvos_core.depth.geometry import (NO_DEPTH_POINTS, ObjectPosition, Objects3DConfig,
                                        object_positions)
from defvos_core.depth.stamp_matcher import MATCHED, MISSING, StampMatcher
from defvos_core.errors import DepthError
from defvos_ros.depth_conversion import camera_intrinsics, depth_pixels
from defvos_ros.ros_helpers import format_stamp, stamp_to_ns

#: Why a whole frame has no 3D positions (the Object3D status of each of its objects).
NO_DEPTH_FRAME, BAD_DEPTH_FRAME, NO_CAMERA_INFO = ('no_depth_frame', 'bad_depth_frame',
                                                   'no_camera_info')
_FRAME_STATUS = {'depth_encoding': BAD_DEPTH_FRAME, 'depth_size': BAD_DEPTH_FRAME,
                 'depth_data': BAD_DEPTH_FRAME, 'camera_info_invalid': NO_CAMERA_INFO,
                 'camera_info_size': NO_CAMERA_INFO}


@dataclass(frozen=True)
class Frame3D:
    """One colour frame's measurement: per object, or why the frame has none."""

    object_values: list[int]  # the tracked objects' mask values, ascending
    positions: dict[int, ObjectPosition] = field(default_factory=dict)
    frame_status: Optional[str] = None  # None, or NO_DEPTH_FRAME / BAD_DEPTH_FRAME / ...
    depth_stamp_ns: Optional[int] = None  # the depth frame used


class Objects3DStage:
    """Depth pairing, measurement, counters and warnings of the node's 3D output."""

    def __init__(self, config: Objects3DConfig, tolerance_sec: float, buffer_size: int,
                 warn: Callable[..., None], wait_sec: float = 0.0) -> None:
        self.config = config
        self.tolerance_ns = int(round(tolerance_sec * 1e9))
        self.wait_sec = wait_sec  # for a depth image still on its way
        self.depth_frames: StampMatcher[Image] = StampMatcher(buffer_size)
        self._camera_info: Optional[CameraInfo] = None
        self._warn = warn
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    # ----------------------------------------------------------------- executor side (O(1))
    def add_depth(self, msg: Image) -> None:
        """Keep a depth image for pairing (converted only if a colour frame uses it)."""
        self.depth_frames.push(stamp_to_ns(msg.header.stamp), msg)

    def set_camera_info(self, msg: CameraInfo) -> None:
        """Use this calibration from now on (checked when used)."""
        self._camera_info = msg

    @property
    def camera_info(self) -> Optional[CameraInfo]:
        """Return the calibration in use (None until one arrives)."""
        return self._camera_info

    def clear(self) -> None:
        """Forget the buffered depth frames (the calibration is kept)."""
        self.depth_frames.clear()

    # --------------------------------------------------------------------- worker thread
    def measure(self, labels: np.ndarray, object_values: Iterable[int], stamp_ns: int,
                names: Optional[Mapping[int, str]] = None) -> Frame3D:
        """Return the 3D measurement of the frame stamped ``stamp_ns`` with label map ``labels``.

        names: the object id of each mask value, for warnings (default: the values).
        """
        values = sorted(object_values)
        where = f'3D positions of frame {format_stamp(stamp_ns)}'
        match = self.depth_frames.match(stamp_ns, self.tolerance_ns, self.wait_sec)
        if match.outcome != MATCHED:
            kind = f'depth_{match.outcome}'
            if match.outcome == MISSING:
                text = 'no depth image received yet (is depth_topic right?)'
            else:
                text = (f'the nearest depth image is {abs(match.offset_ns) * 1e-9:.3f} s '
                        f"{'older' if match.offset_ns < 0 else 'newer'} (stamped "
                        f'{format_stamp(match.stamp_ns)}), beyond depth_tolerance_sec '
                        f'{self.tolerance_ns * 1e-9:g}' + (
                            f'; depth_wait_sec is {self.wait_sec:g}' if match.offset_ns < 0
                            else ''))
            return self._frame_failed(values, NO_DEPTH_FRAME, kind, f'{where}: {text}')
        shape = labels.shape[:2]
        info = self._camera_info
        if info is None:
            return self._frame_failed(values, NO_CAMERA_INFO, 'camera_info_missing',
                                      f'{where}: no CameraInfo received yet (is '
                                      'camera_info_topic right?)', match.stamp_ns)
        try:
            intrinsics = camera_intrinsics(info, shape)
            depth, depth_scale = depth_pixels(match.item, shape)
        except DepthError as error:
            return self._frame_failed(values, _FRAME_STATUS[error.kind], error.kind,
                                      f'{where}: {error}', match.stamp_ns)
        positions = object_positions(labels, depth, intrinsics, values, self.config,
                                     depth_scale)
        starved = [(names or {}).get(value, str(value)) for value, position in positions.items()
                   if position.status == NO_DEPTH_POINTS]
        with self._lock:
            self.counts['frames measured'] += 1
            self.counts['objects located'] += sum(p.ok for p in positions.values())
        if starved:
            self._warn('depth_no_points', f'{where}: objects {starved} have fewer than '
                       f'depth_min_points ({self.config.min_points}) depth readings under '
                       'their eroded mask (out of range, or no reading there)', rejected=False)
        return Frame3D(values, positions, None, match.stamp_ns)

    def _frame_failed(self, values: list[int], status: str, kind: str, text: str,
                      depth_stamp_ns: Optional[int] = None) -> Frame3D:
        with self._lock:
            self.counts['frames without 3D'] += 1
        self._warn(kind, text)
        return Frame3D(values, {}, status, depth_stamp_ns)

    def diagnostic_values(self, warning_counts: Counter[str]) -> list[tuple[str, int]]:
        """Return the 3D counters (running totals) for /diagnostics, problems by kind."""
        with self._lock:
            values = [(f'3D: {name}', self.counts[name]) for name in
                      ('frames measured', 'frames without 3D', 'objects located')]
        values += [(f'3D: {kind}', count) for kind, count in sorted(warning_counts.items())
                   if kind.startswith(('depth_', 'camera_info_', 'objects_3d_'))]
        return values
