"""What the ROS 2 node adds over the bare Engine call, measured in one run on the same images:
image published -> result received (DDS both ways, decode, publish) against ``Engine.infer`` of
one image in the same process. Writes ``bench/results/ros_node.json`` (``make bench``)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def percentiles(ms: list[float]) -> dict:
    return {"median": round(float(np.median(ms)), 3), "p99": round(float(np.percentile(ms, 99)), 3)}


def bare_engine_ms(images: list, model: str, backend: str) -> list[float]:
    import edgefpga.runtime as rt

    times = []
    with rt.open(model, backend=backend) as engine:
        for image in images:
            start = time.perf_counter()
            engine.infer(image)
            times.append((time.perf_counter() - start) * 1e3)
    return times


def node_round_trip_ms(images: list, model: str, backend: str, rate_hz: float) -> list[float]:
    """Publish each image (one at a time, at ``rate_hz``) and time until its result arrives."""
    import rclpy
    from edgefpga_msgs.msg import InspectionResult
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from .images import array_to_image

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(60 + os.getpid() % 30))
    with tempfile.TemporaryDirectory() as tmp:
        params = Path(tmp) / "params.yaml"
        params.write_text(f"inspection:\n  ros__parameters:\n    model: {model}\n    backend: {backend}\n"
                          "    reliable_input: true\n    queue_depth: 100\n")
        node_proc = subprocess.Popen([str(Path(sys.executable).parent / "edgefpga-inspection"), "--ros-args",
                                      "--params-file", str(params)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rclpy.init()
        try:
            probe = rclpy.create_node("bench_probe")
            qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
            pub = probe.create_publisher(Image, "image", qos)
            arrived: dict[int, float] = {}
            probe.create_subscription(InspectionResult, "inspection/result",
                                      lambda m: arrived.setdefault(m.header.stamp.sec, time.perf_counter()), qos)
            deadline = time.monotonic() + 120
            while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
                rclpy.spin_once(probe, timeout_sec=0.1)
            sent: dict[int, float] = {}
            for i, image in enumerate(images, start=1):
                msg = array_to_image(image, Image())
                msg.header.stamp.sec = i
                sent[i] = time.perf_counter()
                pub.publish(msg)
                until = sent[i] + 1.0 / rate_hz
                while time.perf_counter() < until or (i not in arrived and time.perf_counter() < until + 5):
                    rclpy.spin_once(probe, timeout_sec=0.005)
            return [(arrived[i] - sent[i]) * 1e3 for i in sent if i in arrived]
        finally:
            rclpy.shutdown()
            node_proc.terminate()
            node_proc.wait(timeout=15)


def bench_node_latency(n_images: int = 200, model: str = "elpv_defect", backend: str = "onnx",
                       rate_hz: float = 20.0) -> dict:
    from edgefpga.runtime.inputs import elpv_inputs

    images = elpv_inputs(f"elpv:test:{n_images}").images
    bare = bare_engine_ms(images, model, backend)
    round_trip = node_round_trip_ms(images, model, backend, rate_hz)
    added = {k: round(percentiles(round_trip)[k] - percentiles(bare)[k], 3) for k in ("median", "p99")}
    return {"model": model, "backend": backend, "n_images": len(images), "received": len(round_trip),
            "rate_hz": rate_hz, "bare_engine_ms": percentiles(bare), "node_round_trip_ms": percentiles(round_trip),
            "node_added_ms": added,
            "note": "round trip = image published -> result received over DDS on loopback (two processes); "
                    "added = round trip - bare Engine.infer of one image, per percentile"}
