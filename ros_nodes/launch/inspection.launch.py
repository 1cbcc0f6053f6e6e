"""Inspection node + image source + recorder, parameters from config/inspection.yaml.

    ros2 launch edgefpga_ros inspection.launch.py                       # defaults
    ros2 launch edgefpga_ros inspection.launch.py namespace:=line1 params:=/path/to/my.yaml

For a ROS 2 install (launch and launch_ros are not on PyPI): the same three executables with the
same parameters file run without ROS tooling, e.g.
``edgefpga-inspection --ros-args --params-file ros_nodes/config/inspection.yaml``.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

try:
    from ament_index_python.packages import get_package_share_directory

    DEFAULT_PARAMS = str(Path(get_package_share_directory("edgefpga_ros")) / "config" / "inspection.yaml")
except Exception:  # run from a source checkout
    DEFAULT_PARAMS = str(Path(__file__).resolve().parent.parent / "config" / "inspection.yaml")


def generate_launch_description() -> LaunchDescription:
    params = LaunchConfiguration("params")
    namespace = LaunchConfiguration("namespace")
    nodes = [Node(package="edgefpga_ros", executable=exe, name=name, namespace=namespace, parameters=[params],
                  output="screen")
             for exe, name in (("edgefpga-inspection", "inspection"), ("edgefpga-image-source", "image_source"),
                               ("edgefpga-recorder", "recorder"))]
    return LaunchDescription([
        DeclareLaunchArgument("params", default_value=DEFAULT_PARAMS, description="parameters YAML"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace for all three nodes"),
        *nodes,
    ])
