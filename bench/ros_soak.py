"""Soak: the inspection node (its console script, onnx backend, queue_policy all, reliable QoS)
fed ELPV test cells at 30 Hz over DDS on loopback for N minutes.

    python bench/ros_soak.py --minutes 10      # writes bench/results/ros_soak.json

Checks, each failing the run (exit 1) and recorded in the JSON: every image answered exactly
once; the node's counters account for every image; resident memory of the node process after the
warm-up grows less than 5 %; /diagnostics arrived at its rate throughout (no gap over 3 periods).
tests/ros_nodes/test_soak.py runs it for 45 seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent
DIAGNOSTICS_PERIOD_S = 1.0
RSS_GROWTH_LIMIT = 0.05


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def start_node(work: Path) -> subprocess.Popen:
    params = work / "soak.yaml"
    params.write_text("inspection:\n  ros__parameters:\n    model: elpv_defect\n    backend: onnx\n"
                      "    reliable_input: true\n    queue_depth: 1000\n    queue_policy: all\n"
                      f"    diagnostics_period: {DIAGNOSTICS_PERIOD_S}\n")
    return subprocess.Popen([str(BIN / "edgefpga-inspection"), "--ros-args", "--params-file", str(params)],
                            stdout=open(work / "node.log", "w"), stderr=subprocess.STDOUT)


class Probe:
    """Publishes the cells and keeps the results and the node's diagnostics (with arrival times)."""

    def __init__(self, rclpy):
        from diagnostic_msgs.msg import DiagnosticArray
        from edgefpga_msgs.msg import InspectionResult
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.rclpy = rclpy
        self.node = rclpy.create_node("soak_probe")
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.node.create_publisher(Image, "image", qos)
        self.stamps: list[int] = []
        self.diagnostics: list[tuple[float, dict]] = []
        self.node.create_subscription(InspectionResult, "inspection/result",
                                      lambda m: self.stamps.append(m.header.stamp.sec), qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 10)

    def on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.endswith("edgefpga inspection"):
                stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9  # when the node published it
                self.diagnostics.append((time.monotonic(), {kv.key: kv.value for kv in status.values}, stamp))

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.rclpy.spin_once(self.node, timeout_sec=max(0.0, end - time.monotonic()))

    def spin_until(self, predicate, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and not predicate():
            self.rclpy.spin_once(self.node, timeout_sec=0.05)
        return predicate()


def feed(probe: Probe, node: subprocess.Popen, cells: list, rate_hz: float, seconds: float, warmup_s: float,
         progress: bool) -> dict:
    """Publish at ``rate_hz`` for ``seconds``; the node's RSS after the warm-up and at the end."""
    from sensor_msgs.msg import Image
    from edgefpga.progress import progress_bar

    from edgefpga.ros_nodes.images import array_to_image

    total, start, warm_rss = int(rate_hz * seconds), time.monotonic(), None
    for i in progress_bar(range(total), progress=progress, unit="img", desc="soak", mininterval=5):
        msg = array_to_image(cells[i % len(cells)], Image())
        msg.header.stamp.sec = i + 1
        probe.pub.publish(msg)
        probe.spin_for(max(0.0, start + (i + 1) / rate_hz - time.monotonic()))
        if warm_rss is None and time.monotonic() - start > warmup_s:
            warm_rss = rss_kib(node.pid)
    return {"sent": total, "warm_rss_kib": warm_rss, "send_s": round(time.monotonic() - start, 1)}


def checks(sent: int, stamps: list[int], counters: dict, warm_rss: int, end_rss: int, gaps: list[float]) -> dict:
    accounted = int(counters.get("images", -1)) + int(counters.get("errors", 0)) + int(counters.get("dropped", 0))
    return {
        "every_image_answered_once": sorted(stamps) == list(range(1, sent + 1)),
        "node_counters_account_for_every_image": int(counters.get("received", -1)) == sent == accounted,
        "rss_growth_under_5_percent": end_rss <= warm_rss * (1 + RSS_GROWTH_LIMIT),
        "diagnostics_at_rate_throughout": bool(gaps) and max(gaps) <= 3 * DIAGNOSTICS_PERIOD_S,
    }


def soak(minutes: float, rate_hz: float = 30.0, progress: bool = True) -> dict:
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    import rclpy

    from edgefpga.models import elpv

    data = elpv.load()
    cells = list(data.images[elpv.subset("test", data)[:50]])
    rclpy.init()
    work = Path(tempfile.mkdtemp(prefix="edgefpga-soak-"))
    node = start_node(work)
    probe = Probe(rclpy)
    try:
        if not probe.spin_until(lambda: probe.pub.get_subscription_count() > 0 and probe.diagnostics, 120):
            raise RuntimeError(f"the inspection node did not come up; see {work / 'node.log'}")
        seconds = minutes * 60
        fed = feed(probe, node, cells, rate_hz, seconds, warmup_s=min(60.0, max(5.0, seconds / 8)), progress=progress)
        probe.spin_until(lambda: len(probe.stamps) >= fed["sent"], 120)
        probe.spin_for(2 * DIAGNOSTICS_PERIOD_S)  # the counters after the last image
        end_rss = rss_kib(node.pid)
    finally:
        node.terminate()
        node.wait(timeout=30)
        probe.node.destroy_node()
        rclpy.try_shutdown()
    times = [t for t, _, _ in probe.diagnostics]
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    published = [stamp for _, _, stamp in probe.diagnostics]  # a gap here is the node's; only in `gaps`, the probe's
    publish_gaps = [round(b - a, 3) for a, b in zip(published, published[1:])]
    counters = probe.diagnostics[-1][1]
    result = {
        "minutes": minutes, "rate_hz": rate_hz, "sent": fed["sent"], "answered": len(probe.stamps),
        "node_counters": {k: v for k, v in counters.items() if k.split(".")[0] in ("received", "images", "errors", "dropped")},
        "node_latency_ms": {k.split(".")[1]: float(v) for k, v in counters.items() if k.startswith("node_latency_ms.")},
        "rss_kib": {"after_warmup": fed["warm_rss_kib"], "end": end_rss,
                    "growth_percent": round(100 * (end_rss / fed["warm_rss_kib"] - 1), 2)},
        "diagnostics": {"messages": len(times), "period_s": DIAGNOSTICS_PERIOD_S, "max_gap_s": max(gaps, default=None),
                        "max_gap_between_publish_stamps_s": max(publish_gaps, default=None),
                        "gaps_over_2_periods": sum(g > 2 * DIAGNOSTICS_PERIOD_S for g in gaps)},
    }
    result["checks"] = checks(fed["sent"], probe.stamps, counters, fed["warm_rss_kib"], end_rss, gaps)
    result["passed"] = all(result["checks"].values())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=30.0, help="images per second (default 30)")
    parser.add_argument("--out", type=Path, default=RESULTS / "ros_soak.json")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    result = soak(args.minutes, args.rate, progress=not args.quiet)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from edgefpga.provenance import git_commit

    result["machine"] = {"platform": platform.platform(), "python": platform.python_version()}
    result["commit"] = git_commit()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("sent", "answered", "rss_kib", "diagnostics", "checks")}, indent=1))
    failed = [name for name, ok in result["checks"].items() if not ok]
    for name in failed:
        print(f"ros_soak: FAILED {name}", file=sys.stderr)
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
