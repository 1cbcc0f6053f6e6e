"""What the ROS 2 node adds over the bare Engine call -> bench/results/ros_node.json.

The same ELPV cells, one at a time: first ``Engine.infer`` of each in this process (warmed),
then each published to the inspection node (its console script, another process, DDS on
loopback) and timed until its result arrives. The node's overhead is reported as percentiles of
the per-image differences (round trip of image i minus the bare call on image i), not as the
difference of two percentiles.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def percentiles(ms) -> dict:
    ms = np.asarray(ms, dtype=float)
    return {"median": round(float(np.median(ms)), 3), "p90": round(float(np.percentile(ms, 90)), 3),
            "p99": round(float(np.percentile(ms, 99)), 3)}


def bare_engine_ms(images: list, model: str, backend: str) -> list[float]:
    import edgefpga.runtime as rt

    times = []
    with rt.open(model, backend=backend) as engine:
        engine.infer(images[0])  # warm-up
        for image in images:
            start = time.perf_counter()
            engine.infer(image)
            times.append((time.perf_counter() - start) * 1e3)
    return times


def node_round_trip_ms(images: list, model: str, backend: str, rate_hz: float) -> dict[int, float]:
    """Publish each image (one at a time, at ``rate_hz``; the next only after the previous result
    or 5 s) and time until its result arrives: {image index: ms}."""
    import rclpy
    from edgefpga_msgs.msg import InspectionResult
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from edgefpga.ros_nodes.images import array_to_image

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(60 + os.getpid() % 30))
    with tempfile.TemporaryDirectory() as tmp:
        params = Path(tmp) / "params.yaml"
        params.write_text(f"inspection:\n  ros__parameters:\n    model: {model}\n    backend: {backend}\n"
                          "    reliable_input: true\n    queue_depth: 100\n    queue_policy: all\n")
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
            for i, image in enumerate([images[0], *images]):  # the first one warms the node up
                msg = array_to_image(image, Image())
                msg.header.stamp.sec = i
                sent[i] = time.perf_counter()
                pub.publish(msg)
                until = sent[i] + 1.0 / rate_hz
                while time.perf_counter() < until or (i not in arrived and time.perf_counter() < until + 5):
                    rclpy.spin_once(probe, timeout_sec=0.005)
            return {i - 1: (arrived[i] - sent[i]) * 1e3 for i in sent if i in arrived and i > 0}
        finally:
            rclpy.shutdown()
            node_proc.terminate()
            node_proc.wait(timeout=15)


def bench_node_latency(n_images: int = 200, model: str = "elpv_defect", backend: str = "onnx",
                       rate_hz: float = 20.0) -> dict:
    from edgefpga.models import elpv

    data = elpv.load()
    images = list(data.images[elpv.subset("test", data)[:n_images]])
    bare = bare_engine_ms(images, model, backend)
    round_trip = node_round_trip_ms(images, model, backend, rate_hz)
    paired = [round_trip[i] - bare[i] for i in sorted(round_trip)]
    return {"model": model, "backend": backend, "n_images": len(images), "received": len(round_trip),
            "rate_hz": rate_hz, "bare_engine_ms": percentiles(bare),
            "node_round_trip_ms": percentiles(list(round_trip.values())), "node_added_ms": percentiles(paired),
            "note": "round trip = image published -> result received over DDS on loopback (two processes); "
                    "added = percentiles of (round trip of image i - bare Engine.infer of image i)"}
