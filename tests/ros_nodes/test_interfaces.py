"""edgefpga_msgs over real DDS: an InspectionResultArray published by one process (a child python of
the same venv) is received by an rclpy node in this one, every field intact.

edgefpga_msgs is built into the venv by `make setup` (ros_nodes/build_interfaces.py). Discovery is
kept on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) in a domain and on a topic of this
test's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

try:
    import rclpy
    from edgefpga_msgs.msg import InspectionResult, InspectionResultArray
except ImportError as exc:  # a venv set up before the ros extra existed
    raise ImportError(f"{exc}: run `make setup` (installs the ros extra and builds ros_nodes/edgefpga_msgs)") from exc

from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import Header

# rclpy imports rosidl_parser, which imports lark (lark-parser 0.12, what rosidl asks for), which imports the
# deprecated sre_parse/sre_constants on every first node creation.
pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_:DeprecationWarning")

HERE = Path(__file__).resolve().parent
DOMAIN_ID = str(90 + os.getpid() % 40)  # this test's own DDS domain (90..129)
TOPIC = f"/edgefpga_test_{os.getpid()}/results"
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
TYPE_NAME = "edgefpga_msgs/msg/InspectionResultArray"
CLASSES = ["functional", "defective"]


def sample_array() -> InspectionResultArray:
    """Two cells of a 1 x 2 grid; values chosen so that every field differs from its default."""
    header = Header(frame_id="el_camera/module_7")
    header.stamp.sec = 1_764_000_123
    header.stamp.nanosec = 456_789_012
    ok = InspectionResult(
        header=header,
        model_id="elpv_defect@3f2a9c1e0b7d",
        backend="rtl",
        label="functional",
        label_index=0,
        defective=False,
        score=0.125,
        defect_threshold=0.5,
        class_names=CLASSES,
        class_scores=[1.75, -0.25],
        class_probabilities=[0.875, 0.125],
        latency_ms=3.3,  # not exact in float32: compared as float32
        accelerator_cycles=2**40 + 7,  # beyond int32
        roi=RegionOfInterest(x_offset=0, y_offset=0, width=150, height=300, do_rectify=False),
    )
    bad = InspectionResult(
        header=header,
        model_id="elpv_defect@3f2a9c1e0b7d",
        backend="onnx",
        label="defective",
        label_index=1,
        defective=True,
        score=0.9,
        defect_threshold=0.5,
        class_names=CLASSES,
        class_scores=[-2.5, 0.1],
        class_probabilities=[0.1, 0.9],
        latency_ms=0.0625,
        accelerator_cycles=-1,  # the onnx backend has no cycles
        roi=RegionOfInterest(x_offset=150, y_offset=0, width=150, height=300, do_rectify=True),
        model_version="elpv_defect v3", confidence=0.375, hard=True, decided_by="cloud",
        edge_probabilities=[0.4, 0.6], cloud_probabilities=[0.1, 0.9], cloud_model_id="elpv_cloud@0a1b2c3d4e5f",
        escalation="answered",
    )
    return InspectionResultArray(header=header, grid_rows=1, grid_cols=2, any_defective=True, results=[ok, bad])


def publish_forever(topic: str) -> None:
    """The publisher process (its environment set by the test): publish sample_array() at 20 Hz
    until terminated, at most 30 s."""
    rclpy.init()
    node = rclpy.create_node("edgefpga_test_publisher")
    pub = node.create_publisher(InspectionResultArray, topic, QOS)
    msg = sample_array()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pub.publish(msg)
        time.sleep(0.05)
    node.destroy_node()
    rclpy.shutdown()


def ros_env(monkeypatch) -> dict[str, str]:
    """Discovery on this machine only, in this test's own domain: set before rclpy.init, here and
    (inherited) in the publisher process."""
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_DOMAIN_ID", DOMAIN_ID)
    monkeypatch.delenv("ROS_STATIC_PEERS", raising=False)
    monkeypatch.delenv("ROS_LOCALHOST_ONLY", raising=False)
    return dict(os.environ)


def f32(values) -> list[float]:
    return [float(np.float32(v)) for v in values]


def assert_result_equal(got: InspectionResult, want: InspectionResult) -> None:
    assert got.header.stamp.sec == want.header.stamp.sec
    assert got.header.stamp.nanosec == want.header.stamp.nanosec
    assert got.header.frame_id == want.header.frame_id
    assert got.model_id == want.model_id
    assert got.backend == want.backend
    assert got.label == want.label
    assert got.label_index == want.label_index
    assert got.defective is want.defective
    assert got.score == float(np.float32(want.score))
    assert got.defect_threshold == float(np.float32(want.defect_threshold))
    assert list(got.class_names) == list(want.class_names)
    assert list(got.class_scores) == f32(want.class_scores)
    assert list(got.class_probabilities) == f32(want.class_probabilities)
    assert got.latency_ms == float(np.float32(want.latency_ms))
    assert got.accelerator_cycles == want.accelerator_cycles
    for field in ("x_offset", "y_offset", "width", "height", "do_rectify"):
        assert getattr(got.roi, field) == getattr(want.roi, field), field
    for field in ("model_version", "hard", "decided_by", "cloud_model_id", "escalation"):
        assert getattr(got, field) == getattr(want, field), field
    assert got.confidence == float(np.float32(want.confidence))
    assert list(got.edge_probabilities) == f32(want.edge_probabilities)
    assert list(got.cloud_probabilities) == f32(want.cloud_probabilities)


def test_defaults_match_the_msg_files():
    r = InspectionResult()
    assert (r.label, r.label_index, r.defective, r.score, r.accelerator_cycles) == ("", 0, False, 0.0, 0)
    assert list(r.class_names) == [] and list(r.class_scores) == [] and list(r.class_probabilities) == []
    assert (r.roi.x_offset, r.roi.y_offset, r.roi.width, r.roi.height) == (0, 0, 0, 0)
    a = InspectionResultArray()
    assert (a.grid_rows, a.grid_cols, a.any_defective, list(a.results)) == (0, 0, False, [])
    fields = InspectionResult.get_fields_and_field_types()
    assert fields["accelerator_cycles"] == "int64" and fields["roi"] == "sensor_msgs/RegionOfInterest"
    assert fields["class_scores"] == "sequence<float>" and fields["header"] == "std_msgs/Header"
    assert InspectionResultArray.get_fields_and_field_types()["results"] == "sequence<edgefpga_msgs/InspectionResult>"


def test_inspection_result_array_round_trips_between_processes(monkeypatch):
    env = ros_env(monkeypatch)
    publisher = subprocess.Popen(
        [sys.executable, "-c",
         f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_interfaces as t; t.publish_forever({TOPIC!r})"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    received: list[InspectionResultArray] = []
    context = rclpy.Context()  # not the global one: other tests' rclpy use stays untouched
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("edgefpga_test_subscriber", context=context)
        node.create_subscription(InspectionResultArray, TOPIC, received.append, QOS)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + 15
        while not received and time.monotonic() < deadline and publisher.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        types = dict(node.get_topic_names_and_types())
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        publisher.terminate()
        try:
            out, _ = publisher.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            publisher.kill()
            out, _ = publisher.communicate()
    assert received, f"nothing received on {TOPIC} within 15 s; publisher said:\n{out[-3000:]}"
    assert types.get(TOPIC) == [TYPE_NAME]

    got, want = received[0], sample_array()
    assert got.header.stamp.sec == want.header.stamp.sec and got.header.stamp.nanosec == want.header.stamp.nanosec
    assert got.header.frame_id == want.header.frame_id
    assert (got.grid_rows, got.grid_cols, got.any_defective) == (1, 2, True)
    assert len(got.results) == 2
    for g, w in zip(got.results, want.results):
        assert_result_equal(g, w)
    # and as whole messages, once the float32 fields are rounded the way DDS carries them
    for w in want.results:
        w.score, w.defect_threshold, w.latency_ms = (float(np.float32(v)) for v in (w.score, w.defect_threshold, w.latency_ms))
        w.class_scores, w.class_probabilities = f32(w.class_scores), f32(w.class_probabilities)
        w.confidence = float(np.float32(w.confidence))
        w.edge_probabilities, w.cloud_probabilities = f32(w.edge_probabilities), f32(w.cloud_probabilities)
    assert got == want
