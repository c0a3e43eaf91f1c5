"""ROS 2 wrapper of the defvos tracker (rclpy node, image conversion, player)."""
