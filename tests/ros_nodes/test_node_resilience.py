"""The inspection node never dies and accounts for every message: backend exceptions of every
type, a backend that stalls, a parameter storm while streaming, the two queue policies. The node
runs in this process on its own executor thread (so its real backend can be wrapped to raise);
the probe talks to it over DDS on loopback."""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import pytest
from ros_helpers import Probe, ros, spin_until  # noqa: F401  (ros: fixture)

from edgefpga.models.preprocess import ImageError
from edgefpga.runtime.backends import BackendError, EngineError


class FaultyBackend:
    """The engine's real backend, with faults injected in front: each call first sleeps
    ``delay_s``, then raises the next queued exception, if any, else runs the real backend."""

    def __init__(self, inner):
        self.inner, self.name, self.max_batch = inner, inner.name, inner.max_batch
        self.faults: queue.Queue[BaseException] = queue.Queue()
        self.delay_s = 0.0
        self.calls = 0

    def run(self, pixels):
        self.calls += 1
        time.sleep(self.delay_s)
        if not self.faults.empty():
            raise self.faults.get_nowait()
        return self.inner.run(pixels)

    def describe(self) -> str:
        return f"faulty {self.inner.describe()}"

    def close(self) -> None:
        self.inner.close()


class RunningNode:
    """An InspectionNode configured, activated and spinning on a thread of its own."""

    def __init__(self, **params):
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter import Parameter

        from edgefpga.ros_nodes.inspection_node import InspectionNode

        values = {"model": "elpv_defect", "backend": "onnx", "reliable_input": True, "queue_depth": 200,
                  "diagnostics_period": 0.2, "queue_policy": "all"} | params
        self.node = InspectionNode(parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        self.node.trigger_configure()
        self.node.trigger_activate()
        self.backend = FaultyBackend(self.node.engine.backend)
        self.node.engine.backend = self.backend
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def accounted(self) -> bool:
        """Every received message answered, failed, dropped or still waiting."""
        stats = self.node.stats
        with stats.lock:
            done = stats.images + sum(stats.errors.values()) + sum(stats.dropped.values())
            return stats.received == done + len(self.node.frames) and not self.node.frames._items

    def close(self) -> None:
        self.node.stop()
        self.executor.shutdown(timeout_sec=5)
        self.node.destroy_node()


@pytest.fixture(scope="module")
def cells(elpv_data):
    from edgefpga.models import elpv

    return list(elpv_data.images[elpv.subset("test", elpv_data)[:8]])


@pytest.fixture
def probe(ros):
    p = Probe(ros)
    yield p
    p.close()


class OddError(Exception):
    pass


FAULTS = [RuntimeError("DMA channel halted"), OSError(5, "Input/output error"), MemoryError(),
          ValueError("bad shape"), TypeError("unsupported operand"), KeyError("ip"), IndexError("list index"),
          ZeroDivisionError("division by zero"), TimeoutError("wait timed out"), AttributeError("no attribute"),
          AssertionError("driver invariant"), OddError("a vendor's own exception"), BackendError("DMA timeout"),
          EngineError("engine"), ImageError("frame"), KeyboardInterrupt(), SystemExit(3)]


def test_backend_exceptions_of_every_type_are_counted_and_the_node_goes_on(probe, cells):
    running = RunningNode()
    try:
        probe.wait_matched()
        for fault in FAULTS:
            running.backend.faults.put(fault)
        for i in range(len(FAULTS) + 3):  # one message (one engine call) per fault, then good ones
            probe.send(cells[i % len(cells)], sec=100 + i)
            assert spin_until(probe.node, lambda: running.node.stats.received == i + 1 and running.accounted(), 20)
        assert spin_until(probe.node, lambda: len(probe.results) == 3, 20)
        errors = dict(running.node.stats.errors)
    finally:
        running.close()
    assert sum(errors.values()) == len(FAULTS), errors
    for kind in ("backend.RuntimeError", "backend.OSError", "backend.MemoryError", "backend.OddError",
                 "backend.TimeoutError", "backend", "image", "unexpected.KeyboardInterrupt", "unexpected.SystemExit"):
        assert errors.get(kind), (kind, errors)
    assert errors["backend"] == 2  # BackendError and EngineError
    assert sorted(r.header.stamp.sec for r in probe.results)[-1] == 100 + len(FAULTS) + 2  # still answering


def test_diagnostics_and_lifecycle_stay_live_during_a_long_engine_call(probe, cells):
    from lifecycle_msgs.srv import GetState

    running = RunningNode()
    try:
        probe.wait_matched()
        running.backend.delay_s = 3.0
        probe.send(cells[0], sec=1)
        assert spin_until(probe.node, lambda: running.backend.calls == 1, 10)
        before = len(probe.diagnostics)
        client = probe.node.create_client(GetState, "inspection/get_state")
        assert client.wait_for_service(timeout_sec=5)
        future = client.call_async(GetState.Request())
        assert spin_until(probe.node, future.done, 2.0)  # answered while the engine call runs
        spin_until(probe.node, lambda: False, 2.0)
        assert len(probe.results) == 0  # the call is still running ...
        assert len(probe.diagnostics) - before >= 6  # ... and diagnostics came at 5 Hz throughout
        assert spin_until(probe.node, lambda: len(probe.results) == 1, 10)
    finally:
        running.close()
    assert future.result().current_state.label == "active"


def test_latest_policy_answers_the_newest_frame_and_counts_the_stale(probe, cells):
    running = RunningNode(queue_policy="latest")
    try:
        probe.wait_matched()
        running.backend.delay_s = 0.5
        for i in range(20):  # 20 frames in ~1 s against a 0.5 s engine call
            probe.send(cells[i % len(cells)], sec=1 + i)
            spin_until(probe.node, lambda: False, 0.05)
        assert spin_until(probe.node, lambda: running.accounted() and 20 in [r.header.stamp.sec for r in probe.results], 30)
        stats = running.node.stats
    finally:
        running.close()
    answered = sorted(r.header.stamp.sec for r in probe.results)
    assert stats.received == 20 and stats.images == len(answered) < 10
    assert stats.dropped["stale"] == 20 - len(answered) and not stats.errors
    assert answered[-1] == 20  # the newest frame is never the one dropped


def test_all_policy_batches_a_burst_into_few_engine_calls(probe, cells):
    running = RunningNode(queue_policy="all")
    try:
        probe.wait_matched()
        running.backend.delay_s = 0.5
        for i in range(30):
            probe.send(cells[i % len(cells)], sec=1 + i)
        assert spin_until(probe.node, lambda: len(probe.results) == 30, 60)
        calls = running.backend.calls
    finally:
        running.close()
    assert sorted(r.header.stamp.sec for r in probe.results) == list(range(1, 31))
    assert calls < 10  # batched: far fewer engine calls than frames


def set_parameters(probe, values: dict):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = probe.node.create_client(SetParameters, "inspection/set_parameters")
    assert client.wait_for_service(timeout_sec=5)
    future = client.call_async(SetParameters.Request(
        parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]))
    assert spin_until(probe.node, future.done, 10)
    probe.node.destroy_client(client)
    return future.result().results


def test_a_parameter_storm_while_streaming_is_applied_atomically_or_refused_with_a_reason(probe, cells):
    running = RunningNode(queue_policy="all")
    rng = np.random.default_rng(0)
    refused = []
    try:
        probe.wait_matched()
        for i in range(120):
            probe.send(cells[i % len(cells)], sec=1 + i)
            change = [{"defect_threshold": float(rng.uniform(0.05, 0.95))},
                      {"grid_rows": int(rng.integers(1, 3)), "grid_cols": int(rng.integers(1, 3))},
                      {"queue_policy": ["latest", "all"][int(rng.integers(0, 2))]},
                      {"hard_threshold": 1.0, "escalation_budget": float(rng.uniform(0.0, 0.5))},
                      {"defect_threshold": 1.5}, {"queue_policy": "fifo"}, {"model": "/elsewhere"},
                      {"queue_depth": 5}, {"diagnostics_period": 9.0}, {"hard_criterion": "entropy"}][i % 10]
            results = set_parameters(probe, change)
            if i % 10 >= 4:
                refused.append(results[0])
            else:
                assert all(r.successful for r in results), (change, [r.reason for r in results])
        set_parameters(probe, {"queue_policy": "all"})
        assert spin_until(probe.node, running.accounted, 60)
        stats, state = running.node.stats, running.node.state_label
    finally:
        running.close()
    assert state == "active" and not stats.errors
    assert not any(r.successful for r in refused)
    reasons = " | ".join(r.reason for r in refused)
    for text in ("fifo", "cannot open '/elsewhere'", "deactivate first", "read-only", "defect_threshold", "entropy"):
        assert text in reasons, reasons
    assert probe.results and stats.images + stats.dropped["stale"] == 120
    # atomic: every verdict was made with the threshold it reports, and the thresholds did change
    # under the stream (12 were set; with queue_policy "latest" part of the stream, a slow start can
    # drop as stale every frame that saw some of them: once, 4 of them reached a result)
    assert all(r.defective == (r.score >= r.defect_threshold) for r in probe.results)
    assert len({round(r.defect_threshold, 6) for r in probe.results}) >= 3


def test_an_escalation_budget_caps_the_share_of_hard_results(probe, cells):
    """hard_threshold 1 and a 25 % budget: a quarter of the results at most are hard, the least
    confident ones under the chosen criterion (the margin here). The budget's window of recent
    confidences survives an unrelated parameter change and starts afresh when the budget changes."""
    running = RunningNode(hard_threshold=1.0, escalation_budget=0.25, hard_criterion="margin")
    try:
        probe.wait_matched()
        for i in range(40):
            probe.send(cells[i % len(cells)], sec=1 + i)
            time.sleep(0.02)
        assert spin_until(probe.node, lambda: len(probe.results) == 40, 60)
        assert all(r.successful for r in set_parameters(probe, {"defect_threshold": 0.4}))
        kept = running.node.settings
        assert kept.defect_threshold == 0.4 and kept.hard.budget.seen == 40
        assert all(r.successful for r in set_parameters(probe, {"escalation_budget": 0.3}))
        renewed = running.node.settings.hard.budget
        assert renewed.share == 0.3 and renewed.seen == 0
    finally:
        running.close()
    results = sorted(probe.results, key=lambda r: r.header.stamp.sec)
    hard = [r for r in results if r.hard]
    assert 0 < len(hard) <= 10
    margins = [abs(r.class_probabilities[1] - r.class_probabilities[0]) for r in results]
    assert max(m for m, r in zip(margins, results) if r.hard) < np.quantile(margins, 0.6)
