"""The inspection node over real DDS on loopback, started from its console script with a
parameters file: typed results with the image stamps, bad messages, lifecycle, grid, diagnostics."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from ros_helpers import Probe, ros, spin_until, start_node  # noqa: F401  (ros: fixture)

CELLS = 8


@pytest.fixture(scope="module")
def cells(elpv_data):
    from edgefpga.models import elpv

    return list(elpv_data.images[elpv.subset("test", elpv_data)[:CELLS]])


@pytest.fixture
def probe(ros):
    p = Probe(ros)
    yield p
    p.close()


def test_results_carry_the_image_stamps_and_the_engines_verdicts(tmp_path, probe, cells):
    import edgefpga.runtime as rt

    node = start_node(tmp_path, "basic", defect_threshold=0.4)
    try:
        node.wait_for("engine:")
        probe.wait_matched()
        for i, cell in enumerate(cells):
            probe.send(cell, sec=1000 + i)
        assert spin_until(probe.node, lambda: len(probe.results) == CELLS, 30), node.output()[-2000:]
    finally:
        node.stop()
    with rt.open("elpv_defect", backend="onnx", defect_threshold=0.4) as engine:
        expected = engine.infer(cells)
    got = sorted(probe.results, key=lambda r: r.header.stamp.sec)
    assert [r.header.stamp.sec for r in got] == list(range(1000, 1000 + CELLS))
    assert all(r.header.frame_id == "cam0" for r in got)
    for msg, ref in zip(got, expected):
        assert msg.label == ref.label and msg.defective == ref.defective
        assert msg.score == pytest.approx(ref.score, abs=1e-5)
        assert list(msg.class_scores) == pytest.approx(ref.scores, abs=1e-5)
        assert list(msg.class_names) == ["functional", "defective"]
        assert msg.defect_threshold == pytest.approx(0.4)  # from the parameters file
        assert msg.backend == "onnx" and msg.model_id == ref.model_id and msg.accelerator_cycles == -1


def test_bad_messages_are_logged_counted_and_the_node_keeps_serving(tmp_path, probe, cells):
    from sensor_msgs.msg import CompressedImage, Image

    node = start_node(tmp_path, "bad")
    try:
        node.wait_for("engine:")
        probe.wait_matched()
        wrong_encoding = Image(height=4, width=4, encoding="16UC1", step=8, data=bytes(32))
        short = Image(height=10, width=10, encoding="mono8", step=10, data=bytes(50))
        empty = Image(height=0, width=0, encoding="mono8", step=0, data=b"")
        huge = Image(height=100_000, width=100_000, encoding="mono8", step=100_000, data=bytes(10))
        for i, msg in enumerate((wrong_encoding, short, empty, huge)):
            msg.header.stamp.sec = 1 + i
            probe.image_pub.publish(msg)
        probe.compressed_pub.publish(CompressedImage(format="jpeg", data=b"\xff\xd8 not a jpeg"))
        probe.send(cells[0], sec=77)
        assert spin_until(probe.node, lambda: len(probe.results) == 1, 30), node.output()[-2000:]
        assert probe.results[0].header.stamp.sec == 77
        assert spin_until(probe.node, lambda: probe.diagnostics and probe.latest_diagnostics().get("errors") == "5", 10)
        diag = probe.latest_diagnostics()
        assert (diag.get("errors.encoding"), diag.get("errors.layout"), diag.get("errors.size"),
                diag.get("errors.compressed")) == ("1", "1", "2", "1"), (diag, node.output()[-3000:])
        assert diag["images"] == "1" and "engine_latency_ms.p50" in diag and diag["backend"] == "onnx"
        log = node.output()
        assert log.count("dropped") == 5 and "16UC1" in log and "does not decode" in log
    finally:
        node.stop()


def change_state(probe, node_name: str, transition: int) -> bool:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    client = probe.node.create_client(ChangeState, f"{node_name}/change_state")
    assert client.wait_for_service(timeout_sec=30)
    future = client.call_async(ChangeState.Request(transition=Transition(id=transition)))
    assert spin_until(probe.node, future.done, 60)
    return future.result().success


def current_state(probe, node_name: str) -> str:
    from lifecycle_msgs.srv import GetState

    client = probe.node.create_client(GetState, f"{node_name}/get_state")
    assert client.wait_for_service(timeout_sec=30)
    future = client.call_async(GetState.Request())
    assert spin_until(probe.node, future.done, 30)
    return future.result().current_state.label


def test_lifecycle_transitions_gate_the_work(tmp_path, probe, cells):
    from lifecycle_msgs.msg import Transition

    node = start_node(tmp_path, "lifecycle", autostart=False)
    try:
        assert current_state(probe, "inspection") == "unconfigured"
        assert change_state(probe, "inspection", Transition.TRANSITION_CONFIGURE)
        assert current_state(probe, "inspection") == "inactive"
        assert change_state(probe, "inspection", Transition.TRANSITION_ACTIVATE)
        probe.wait_matched()
        probe.send(cells[0], sec=5)
        assert spin_until(probe.node, lambda: len(probe.results) == 1, 30)
        assert change_state(probe, "inspection", Transition.TRANSITION_DEACTIVATE)
        assert current_state(probe, "inspection") == "inactive"
        probe.send(cells[1], sec=6)
        spin_until(probe.node, lambda: False, 2)
        assert len(probe.results) == 1  # inactive: no subscription, no result
        assert change_state(probe, "inspection", Transition.TRANSITION_CLEANUP)
        assert current_state(probe, "inspection") == "unconfigured"
    finally:
        node.stop()


@pytest.mark.parametrize("params, reason", [({"model": "/no/such/model"}, "does not exist"),
                                             ({"backend": "fpga"}, "unknown backend 'fpga'")])
def test_a_bad_model_or_backend_refuses_to_configure(tmp_path, probe, params, reason):
    from lifecycle_msgs.msg import Transition

    node = start_node(tmp_path, "refuse", autostart=False, **params)
    try:
        assert not change_state(probe, "inspection", Transition.TRANSITION_CONFIGURE)
        assert current_state(probe, "inspection") == "unconfigured"
        node.wait_for("cannot configure")
        assert reason in node.output() and node.proc.poll() is None
        assert spin_until(probe.node, lambda: probe.diagnostics and reason in probe.latest_diagnostics()["message"], 10)
    finally:
        node.stop()


def test_grid_gives_one_verdict_per_cell(tmp_path, probe, cells):
    node = start_node(tmp_path, "grid", grid_rows=2, grid_cols=3)
    try:
        node.wait_for("engine:")
        probe.wait_matched()
        module = np.hstack([np.vstack([cells[r * 3 + c] for r in range(2)]) for c in range(3)])  # 600 x 900
        probe.send(cv2.cvtColor(module, cv2.COLOR_GRAY2BGR), sec=9, encoding="rgb8")
        assert spin_until(probe.node, lambda: probe.arrays and probe.results, 30), node.output()[-2000:]
    finally:
        node.stop()
    array = probe.arrays[0]
    assert (array.grid_rows, array.grid_cols, len(array.results)) == (2, 3, 6)
    rois = [(r.roi.x_offset, r.roi.y_offset, r.roi.width, r.roi.height) for r in array.results]
    assert rois[0] == (0, 0, 300, 300) and rois[-1] == (600, 300, 300, 300)
    assert array.any_defective == any(r.defective for r in array.results)
    assert probe.results[0].score == max(r.score for r in array.results)  # the summary is the worst cell
