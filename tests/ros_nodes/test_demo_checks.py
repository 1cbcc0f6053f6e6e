"""`edgefpga-demo` fails (exit 1) when results are lost, images fail in the node, or the accuracy
collapses; frames the node dropped by its queue policy (and counted) are not failures."""

from edgefpga.ros_nodes.demo import demo_failures


def test_a_clean_run_passes():
    assert demo_failures({"published": 24, "received": 24, "missing": 0, "accuracy": 0.83}, 0.5) == []


def test_stale_frames_counted_by_the_node_are_not_lost():
    summary = {"published": 24, "received": 17, "missing": 7, "accuracy": 0.83,
               "node": {"received": 24, "images": 17, "errors": 0, "dropped": 7, "dropped.stale": 7}}
    assert demo_failures(summary, 0.5) == []


def test_lost_results_fail():
    assert demo_failures({"published": 24, "received": 23, "missing": 1, "accuracy": 0.83}, 0.5) == [
        "results lost: 23 of 24 came back and 1 are not accounted for by the node's counters"]
    summary = {"published": 24, "received": 20, "node": {"errors": 0, "dropped": 3}}
    assert demo_failures(summary, 0.5)[0].endswith("1 are not accounted for by the node's counters")
    assert demo_failures({}, 0.5) == ["no results came back"]


def test_images_that_failed_in_the_node_fail_the_run():
    summary = {"published": 24, "received": 22, "node": {"errors": 2, "dropped": 0}}
    assert demo_failures(summary, 0.5) == ["2 image(s) failed in the inspection node (see demo_out/logs/inspection.log)"]


def test_a_collapsed_accuracy_fails():
    assert demo_failures({"published": 24, "received": 24, "missing": 0, "accuracy": 0.31}, 0.5) == [
        "accuracy collapsed: 0.3100 < 0.50"]
