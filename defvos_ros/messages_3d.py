"""The 3D stage's results -> messages: Object3DArray, a per-object PointCloud2, RViz markers.

- `objects_3d_message`: one Object3D per tracked object (vision_msgs conventions: string id,
  box by centre pose + size), with the colour image's header; an object without a position
  says why (``status``).
- `cloud_message`: the measured points of every located object, x, y, z (float32, metres)
  and ``mask_value`` (uint32: the object's value on defvos/masks), decimated to a bound.
- `markers_message`: per located object a translucent box and its id as a label, in the
  overlay's colours (defvos_core.overlay.PALETTE); the first marker deletes
  the previous message's, so objects that vanish leave nothing behind.
"""

from __future__ import annotations

import math

import numpy as np
from defvos_interfaces.msg import Object3D, Object3DArray
from geometry_msgs.msg import Point
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from defvos_core.depth.geometry import ABSENT, NO_DEPTH_POINTS, OK
from defvos_core.overlay import PALETTE
from defvos_ros.objects_3d import BAD_DEPTH_FRAME, NO_CAMERA_INFO, NO_DEPTH_FRAME, Frame3D
from defvos_ros.ros_helpers import ns_to_stamp

STATUS = {OK: Object3D.STATUS_OK, ABSENT: Object3D.STATUS_ABSENT,
          NO_DEPTH_POINTS: Object3D.STATUS_NO_DEPTH_POINTS,
          NO_DEPTH_FRAME: Object3D.STATUS_NO_DEPTH_FRAME,
          BAD_DEPTH_FRAME: Object3D.STATUS_BAD_DEPTH_FRAME,
          NO_CAMERA_INFO: Object3D.STATUS_NO_CAMERA_INFO}
CLOUD_FIELDS = [PointField(name='x', offset=0, datatype=PointField.FLOAT32, count=1),
                PointField(name='y', offset=4, datatype=PointField.FLOAT32, count=1),
                PointField(name='z', offset=8, datatype=PointField.FLOAT32, count=1),
                PointField(name='mask_value', offset=12, datatype=PointField.UINT32, count=1)]
_CLOUD_DTYPE = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('mask_value', '<u4')])
MIN_MARKER_SIZE = 0.01  # metres: a flat face still shows as a box
LABEL_HEIGHT = 0.08  # metres: text size of the id labels


def objects_3d_message(frame: Frame3D, ids: dict[int, str], header: Header) -> Object3DArray:
    """Return one Object3D per tracked object (ascending mask value), header copied."""
    msg = Object3DArray(header=header)
    if frame.depth_stamp_ns is not None:
        msg.depth_stamp = ns_to_stamp(frame.depth_stamp_ns)
    for value in frame.object_values:
        item = Object3D(id=ids.get(value, str(value)), mask_value=value)
        position = frame.positions.get(value)
        if position is None:
            item.status = STATUS[frame.frame_status or ABSENT]
        else:
            item.status = STATUS[position.status]
            item.valid_points = position.valid_points
        if position is not None and position.ok:
            item.has_position = True
            item.position = _point(position.centroid)
            item.bbox.center.position = _point(position.box_centre)
            item.bbox.center.orientation.w = 1.0
            item.bbox.size.x, item.bbox.size.y, item.bbox.size.z = (
                float(v) for v in position.box_size)
        msg.objects.append(item)
    return msg


def cloud_message(frame: Frame3D, header: Header, max_points: int) -> PointCloud2:
    """Return the located objects' points as one PointCloud2 of at most ``max_points``."""
    parts = [(value, position.points) for value, position in sorted(frame.positions.items())
             if position.ok and position.points is not None]
    total = sum(len(points) for _, points in parts)
    stride = max(1, math.ceil(total / max(max_points, 1)))
    cloud = np.empty(total, _CLOUD_DTYPE)
    start = 0
    for value, points in parts:
        cloud['x'][start:start + len(points)] = points[:, 0]
        cloud['y'][start:start + len(points)] = points[:, 1]
        cloud['z'][start:start + len(points)] = points[:, 2]
        cloud['mask_value'][start:start + len(points)] = value
        start += len(points)
    cloud = cloud[::stride]
    return PointCloud2(header=header, height=1, width=len(cloud), fields=CLOUD_FIELDS,
                       is_bigendian=False, point_step=_CLOUD_DTYPE.itemsize,
                       row_step=_CLOUD_DTYPE.itemsize * len(cloud), data=cloud.tobytes(),
                       is_dense=True)


def markers_message(frame: Frame3D, ids: dict[int, str], header: Header) -> MarkerArray:
    """Return a DELETEALL, then a box and an id label for each located object."""
    markers = [Marker(header=header, action=Marker.DELETEALL)]
    for value, position in sorted(frame.positions.items()):
        if not position.ok:
            continue
        red, green, blue = (float(c) / 255 for c in PALETTE[value])
        box = Marker(header=header, ns='defvos_boxes', id=int(value), type=Marker.CUBE,
                     action=Marker.ADD, color=ColorRGBA(r=red, g=green, b=blue, a=0.4))
        box.pose.position = _point(position.box_centre)
        box.pose.orientation.w = 1.0
        box.scale.x, box.scale.y, box.scale.z = (max(float(v), MIN_MARKER_SIZE)
                                                 for v in position.box_size)
        label = Marker(header=header, ns='defvos_labels', id=int(value),
                       type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                       text=ids.get(value, str(value)),
                       color=ColorRGBA(r=red, g=green, b=blue, a=1.0))
        label.pose.position = _point(position.box_centre)
        label.pose.position.y -= box.scale.y / 2 + LABEL_HEIGHT  # above the box (y is down)
        label.pose.orientation.w = 1.0
        label.scale.z = LABEL_HEIGHT
        markers += [box, label]
    return MarkerArray(markers=markers)


def _point(values: np.ndarray) -> Point:
    return Point(x=float(values[0]), y=float(values[1]), z=float(values[2]))
