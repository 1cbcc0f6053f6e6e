"""Small pieces the run-to-completion nodes (image source, recorder) share."""

from __future__ import annotations

import csv
from pathlib import Path


def open_csv(path: str, header: list[str]):
    """A CSV file opened for writing with its header row, or None when ``path`` is empty."""
    if not path:
        return None
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "w", newline="")
    csv.writer(handle).writerow(header)
    return handle


def spin_until_done(rclpy, node) -> None:
    """Serve callbacks until ``node.done`` or ROS shuts down."""
    while rclpy.ok() and not node.done:
        rclpy.spin_once(node, timeout_sec=0.1)
