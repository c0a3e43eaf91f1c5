"""Shared fixtures: the node tests' ROS harness (test/ros_harness.py) is a pytest plugin."""

pytest_plugins = ['ros_harness']
