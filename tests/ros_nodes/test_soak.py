"""Two minutes at 30 Hz through the inspection node (onnx backend, reliable QoS): no result
lost, resident memory of the node process flat within 5 % after warm-up."""

from __future__ import annotations

import time

import pytest
from ros_helpers import Probe, ros, spin_until, start_node  # noqa: F401  (ros: fixture)

pytestmark = pytest.mark.slow

RATE_HZ, SECONDS, WARMUP_S = 30.0, 120.0, 15.0


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_soak_two_minutes_at_30_hz_loses_nothing_and_does_not_grow(ros, tmp_path, elpv_data):
    from edgefpga.models import elpv

    cells = list(elpv_data.images[elpv.subset("test", elpv_data)[:50]])
    probe = Probe(ros)
    node = start_node(tmp_path, "soak", queue_depth=1000)
    try:
        node.wait_for("engine:")
        probe.wait_matched()
        total = int(RATE_HZ * SECONDS)
        start, warm_rss = time.monotonic(), None
        for i in range(total):
            probe.send(cells[i % len(cells)], sec=i + 1)
            due = start + (i + 1) / RATE_HZ
            while time.monotonic() < due:
                ros.spin_once(probe.node, timeout_sec=max(0.0, due - time.monotonic()))
            if warm_rss is None and time.monotonic() - start > WARMUP_S:
                warm_rss = rss_kib(node.proc.pid)
        assert spin_until(probe.node, lambda: len(probe.results) >= total, 60)
        end_rss = rss_kib(node.proc.pid)
    finally:
        node.stop()
        probe.close()
    stamps = sorted(r.header.stamp.sec for r in probe.results)
    assert stamps == list(range(1, total + 1))  # every image answered exactly once
    assert end_rss <= warm_rss * 1.05, f"RSS grew from {warm_rss} KiB to {end_rss} KiB"
