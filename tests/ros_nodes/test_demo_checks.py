"""`edgefpga-demo` fails (exit 1) when results are lost or the accuracy collapses."""

from edgefpga.ros_nodes.demo import demo_failures


def test_a_clean_run_passes():
    assert demo_failures({"published": 24, "received": 24, "missing": 0, "accuracy": 0.83}, 0.5) == []


def test_lost_results_fail():
    assert demo_failures({"published": 24, "received": 23, "missing": 1, "accuracy": 0.83}, 0.5) == [
        "results lost: 23 of 24 came back"]
    assert demo_failures({}, 0.5) == ["no results came back"]


def test_a_collapsed_accuracy_fails():
    assert demo_failures({"published": 24, "received": 24, "missing": 0, "accuracy": 0.31}, 0.5) == [
        "accuracy collapsed: 0.3100 < 0.50"]
