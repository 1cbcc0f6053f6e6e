"""The inspection node alone, for a cell that already has a camera driver publishing ``image``.

    ros2 launch edgefpga_ros inspection_only.launch.py image:=/camera/image_raw model:=/opt/edgefpga/elpv_defect
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

DEFAULT_PARAMS = str(Path(__file__).resolve().parent.parent / "config" / "inspection.yaml")


def generate_launch_description() -> LaunchDescription:
    args = {"image": "image", "model": "build/elpv_defect", "backend": "auto", "params": DEFAULT_PARAMS}
    node = Node(package="edgefpga_ros", executable="edgefpga-inspection", name="inspection",
                parameters=[LaunchConfiguration("params"),
                            {"model": LaunchConfiguration("model"), "backend": LaunchConfiguration("backend")}],
                remappings=[("image", LaunchConfiguration("image"))], output="screen")
    return LaunchDescription([DeclareLaunchArgument(k, default_value=v) for k, v in args.items()] + [node])
