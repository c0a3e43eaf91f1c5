"""Objects in 3D from a depth image aligned to the colour frame (no ROS).

`geometry`: back-projection of a label map's objects through pinhole intrinsics, and each
object's robust centroid and axis-aligned extent. `stamp_matcher`: pairs a colour frame with
the depth frame of the nearest stamp, in bounded memory.
"""
