"""The project's message types for rosbags (which reads and writes bags without a ROS install):
registered from the same .msg files the interface package is built from."""

from __future__ import annotations

from pathlib import Path

MSG_DIR = Path(__file__).resolve().parent / "edgefpga_msgs" / "msg"
MESSAGES = ("InspectionResult", "InspectionResultArray")


def register_result_types(typestore) -> None:
    from rosbags.typesys import get_types_from_msg

    types = {}
    for name in MESSAGES:
        types |= get_types_from_msg((MSG_DIR / f"{name}.msg").read_text(), f"edgefpga_msgs/msg/{name}")
    typestore.register(types)
