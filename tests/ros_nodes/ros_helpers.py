"""ROS 2 test helpers (imported by the ros_nodes tests): DDS on loopback in a domain per test
module, a probe node that publishes images and collects what the nodes under test publish, and node processes started from their
console scripts with a parameters file, as a user starts them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent


def domain_for(name: str) -> int:
    """A ROS_DOMAIN_ID per test module (and per run), so parallel runs do not hear each other."""
    return 10 + (zlib.crc32(name.encode()) + os.getpid()) % 80


@pytest.fixture(scope="module")
def ros(request):
    """rclpy initialised for this module, discovery on loopback only."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(domain_for(request.module.__name__))
    import rclpy

    rclpy.init()
    yield rclpy
    rclpy.shutdown()


def spin_until(node, predicate, timeout_s: float = 20.0) -> bool:
    import rclpy

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        rclpy.spin_once(node, timeout_sec=0.05)
    return predicate()


def write_params(path: Path, node: str, params: dict) -> Path:
    lines = [f"{node}:", "  ros__parameters:"]
    lines += [f"    {key}: {value!r}" if isinstance(value, str) else f"    {key}: {str(value).lower() if isinstance(value, bool) else value}"
              for key, value in params.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class NodeProcess:
    """A node console script in its own process, its output in a log file."""

    def __init__(self, script: str, params_file: Path, log: Path, extra: list[str] = ()):
        self.log = log
        self.proc = subprocess.Popen([str(BIN / script), "--ros-args", "--params-file", str(params_file), *extra],
                                     stdout=open(log, "w"), stderr=subprocess.STDOUT, env=dict(os.environ))

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, text: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited ({self.proc.returncode}):\n{self.output()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not in the node's output after {timeout_s} s:\n{self.output()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Probe:
    """Publishes images into the node under test and keeps what it publishes."""

    def __init__(self, rclpy):
        from diagnostic_msgs.msg import DiagnosticArray
        from edgefpga_msgs.msg import InspectionResult, InspectionResultArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        self.node = rclpy.create_node(f"probe_{time.monotonic_ns()}")
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, "image", qos)
        self.compressed_pub = self.node.create_publisher(CompressedImage, "image/compressed", qos)
        self.results, self.arrays, self.diagnostics = [], [], []
        self.node.create_subscription(InspectionResult, "inspection/result", self.results.append, qos)
        self.node.create_subscription(InspectionResultArray, "inspection/results", self.arrays.append, qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)

    def send(self, image: np.ndarray, sec: int, encoding: str | None = None):
        from sensor_msgs.msg import Image

        from edgefpga.ros_nodes.images import array_to_image

        msg = array_to_image(image, Image(), encoding)
        msg.header.stamp.sec, msg.header.frame_id = sec, "cam0"
        self.image_pub.publish(msg)
        return msg

    def wait_matched(self) -> None:
        """Both input topics matched: the node subscribes to them one after the other, and a
        message published before its topic matches is lost (a compressed image once was, and the
        bad-message test counted 4 errors of 5)."""
        assert spin_until(self.node, lambda: self.image_pub.get_subscription_count() > 0
                          and self.compressed_pub.get_subscription_count() > 0, 30)

    def latest_diagnostics(self) -> dict:
        status = self.diagnostics[-1].status[0]
        return {"level": status.level, "message": status.message, **{kv.key: kv.value for kv in status.values}}

    def close(self) -> None:
        self.node.destroy_node()


def start_node(tmp_path, name: str, **params) -> NodeProcess:
    values = {"model": "elpv_defect", "backend": "onnx", "reliable_input": True, "queue_depth": 100,
              "queue_policy": "all", "diagnostics_period": 0.5} | params  # all: tests count every answer
    params_file = write_params(tmp_path / f"{name}.yaml", "inspection", values)
    return NodeProcess("edgefpga-inspection", params_file, tmp_path / f"{name}.log")
