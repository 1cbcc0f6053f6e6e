"""ament_python package ``edgefpga_ros`` for a ROS 2 install (colcon build --paths ros_nodes ros_nodes/edgefpga_msgs).

The node code is the ``edgefpga`` Python package (``pip install edgefpga`` into the ROS
environment); this package adds the executables, launch files and parameter files where
``ros2 run`` / ``ros2 launch`` look for them."""

from glob import glob

from setuptools import setup

setup(
    name="edgefpga_ros",
    version="0.1.0",
    packages=[],
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/edgefpga_ros"]),
        ("share/edgefpga_ros", ["package.xml"]),
        ("share/edgefpga_ros/launch", glob("launch/*.launch.py")),
        ("share/edgefpga_ros/config", glob("config/*.yaml")),
    ],
    install_requires=["edgefpga"],
    entry_points={"console_scripts": [
        "edgefpga-inspection = edgefpga.ros_nodes.inspection_node:main",
        "edgefpga-image-source = edgefpga.ros_nodes.image_source:main",
        "edgefpga-recorder = edgefpga.ros_nodes.recorder:main",
    ]},
)
