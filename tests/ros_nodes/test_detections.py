"""The inspection node serving a detector (issue 14): module images in over DDS, a typed
DetectionArray out per image (class, score, centre in image pixels, the image's header), the same
detections as the Engine gives, and the optional annotated image."""

from __future__ import annotations

import pytest
from ros_helpers import Probe, ros, spin_until, start_node  # noqa: F401  (ros: fixture)

from edgefpga.models.card import ZOO

DETECTOR = ZOO / "elpv_modules_detect"


@pytest.fixture
def probe(ros):
    from edgefpga_msgs.msg import DetectionArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    p = Probe(ros)
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    p.detections, p.annotated = [], []
    p.node.create_subscription(DetectionArray, "inspection/detections", p.detections.append, qos)
    p.node.create_subscription(Image, "inspection/annotated", p.annotated.append, qos)
    yield p
    p.close()


@pytest.mark.timeout(300)  # about 10 s on an idle machine; minutes when the cores are shared
def test_the_node_publishes_where_the_defective_cells_are(tmp_path, probe):
    import edgefpga.runtime as rt
    from edgefpga.models import modules

    found = modules.select("modules:test:4")
    node = start_node(tmp_path, "detector", model=str(DETECTOR), backend="onnx", annotated_image=True)
    try:
        node.wait_for("engine:")
        probe.wait_matched()
        for i, m in enumerate(found):
            probe.send(m.image, sec=700 + i)
        assert spin_until(probe.node, lambda: len(probe.detections) == len(found) and len(probe.annotated) == len(found),
                          60), node.output()[-2000:]
    finally:
        node.stop()
    with rt.open(DETECTOR, backend="onnx") as engine:
        expected = engine.infer([m.image for m in found])
    assert any(r.detections for r in expected)
    for msg, ref, m in zip(sorted(probe.detections, key=lambda d: d.header.stamp.sec), expected, found):
        assert msg.header.frame_id == "cam0" and msg.backend == "onnx" and msg.threshold == pytest.approx(0.5)
        assert (msg.image_height, msg.image_width) == m.image.shape[:2]
        assert [d.label for d in msg.detections] == [d["label"] for d in ref.detections]
        for d, e in zip(msg.detections, ref.detections):
            assert (d.x, d.y) == pytest.approx((e["x"], e["y"])) and d.score == pytest.approx(e["score"], abs=1e-6)
            assert d.label == "defective" and d.label_index == 1
    for img, m in zip(sorted(probe.annotated, key=lambda i: i.header.stamp.sec), found):
        assert img.encoding == "bgr8" and (img.height, img.width) == m.image.shape[:2]
    # the summary verdict still goes out: defective exactly when something was found
    by_stamp = {r.header.stamp.sec: r for r in probe.results}
    for i, ref in enumerate(expected):
        assert by_stamp[700 + i].defective == bool(ref.detections)
