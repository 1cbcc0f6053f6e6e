"""The results recorder: ``inspection/result`` to a CSV file and/or a ROS 2 bag, and, given the
image source's labels (keyed by header stamp), accuracy against them.

Parameters: ``csv`` (path, empty: none), ``bag`` (folder for an MCAP bag written with rosbags,
empty: none), ``labels_csv`` (the image source's), ``expected`` (stop once this many images are
accounted for: answered, or counted by the inspection node as failed or dropped in its
/diagnostics; 0: run until shut down), ``idle_timeout`` (stop when no result came for this long,
once at least one did; 0: never).

It also keeps the inspection node's latest /diagnostics counters (received, answered, failed and
dropped by kind), so that a run's summary says where every image went.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from edgefpga.models.metrics import classification_metrics

from .node_io import open_csv, spin_until_done

PARAMETERS = {"csv": "", "bag": "", "labels_csv": "", "expected": 0, "idle_timeout": 0.0, "queue_depth": 1000}
COUNTERS = ("received", "images", "errors", "dropped")  # the inspection node's diagnostics counters
CSV_FIELDS = ["stamp_ns", "frame_id", "label", "label_index", "defective", "score", "latency_ms",
              "accelerator_cycles", "backend", "model_id", "received_ns"]


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def read_labels(path: str | Path) -> dict[int, tuple[str, str]]:
    """stamp_ns -> (image name, class name) from the image source's labels CSV."""
    with open(path, newline="") as f:
        return {int(row["stamp_ns"]): (row["name"], row["label"]) for row in csv.DictReader(f)}


def score_rows(rows: list[dict], labels: dict[int, tuple[str, str]], classes: list[str]) -> dict:
    """Accuracy of recorded results against the labels, matched by stamp; counts what is missing."""
    by_stamp = {int(r["stamp_ns"]): r for r in rows}
    labelled = {s: v for s, v in labels.items() if v[1]}
    matched = [s for s in labelled if s in by_stamp]
    out = {"published": len(labels), "received": len(rows), "missing": len(labelled) - len(matched)}
    if matched:
        truth = np.array([classes.index(labelled[s][1]) for s in matched])
        pred = np.array([int(by_stamp[s]["label_index"]) for s in matched])
        out |= classification_metrics(truth, pred, len(classes))
    return out


class BagWriter:
    """InspectionResult messages into an MCAP bag, with the message definition registered."""

    def __init__(self, folder: Path, topic: str):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        from .bag_types import register_result_types

        self.typestore = get_typestore(Stores.LATEST)
        register_result_types(self.typestore)
        self.writer = Writer(folder, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.connection = self.writer.add_connection(topic, "edgefpga_msgs/msg/InspectionResult",
                                                     typestore=self.typestore)

    def write(self, raw: bytes, timestamp_ns: int) -> None:
        self.writer.write(self.connection, timestamp_ns, raw)

    def close(self) -> None:
        self.writer.close()


class Recorder(Node):
    def __init__(self, name: str = "recorder", **kwargs):
        from edgefpga_msgs.msg import InspectionResult

        super().__init__(name, **kwargs)
        for key, default in PARAMETERS.items():
            self.declare_parameter(key, default)
        self.rows: list[dict] = []
        self.classes: list[str] = []
        self.last_received = None
        self.csv_file = open_csv(self.param("csv"), CSV_FIELDS)
        self.bag = BagWriter(Path(self.param("bag")), "inspection/result") if self.param("bag") else None
        qos = QoSProfile(depth=self.param("queue_depth"), reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST)
        self.create_subscription(InspectionResult, "inspection/result", self.on_result, qos, raw=self.bag is not None)
        self.node_counts: dict[str, int] = {}
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 10)

    def param(self, name: str):
        return self.get_parameter(name).value

    def on_result(self, msg) -> None:
        received = time.time_ns()
        if self.bag is not None:  # raw CDR bytes: write them as they came, then deserialize for the CSV
            from edgefpga_msgs.msg import InspectionResult
            from rclpy.serialization import deserialize_message

            self.bag.write(msg, received)
            msg = deserialize_message(msg, InspectionResult)
        row = {"stamp_ns": stamp_ns(msg.header), "frame_id": msg.header.frame_id, "label": msg.label,
               "label_index": msg.label_index, "defective": msg.defective, "score": round(msg.score, 6),
               "latency_ms": round(msg.latency_ms, 4), "accelerator_cycles": msg.accelerator_cycles,
               "backend": msg.backend, "model_id": msg.model_id, "received_ns": received}
        self.classes = list(msg.class_names)
        self.rows.append(row)
        self.last_received = time.monotonic()
        if self.csv_file:
            csv.DictWriter(self.csv_file, CSV_FIELDS).writerow(row)
            self.csv_file.flush()  # followers (the demo's progress bar) read it as it grows

    def on_diagnostics(self, msg) -> None:
        """The inspection node's counters: how many images it failed or dropped, by kind."""
        for status in msg.status:
            if status.name.endswith("edgefpga inspection"):
                self.node_counts = {kv.key: int(kv.value) for kv in status.values
                                    if kv.key.split(".")[0] in COUNTERS and kv.value.isdigit()}

    @property
    def not_answered(self) -> int:
        """Images the inspection node reports as failed or dropped (so no result will come)."""
        return self.node_counts.get("errors", 0) + self.node_counts.get("dropped", 0)

    @property
    def done(self) -> bool:
        expected, idle = self.param("expected"), self.param("idle_timeout")
        if expected and len(self.rows) + self.not_answered >= expected:
            return True
        return bool(idle and self.last_received and time.monotonic() - self.last_received > idle)

    def summary(self) -> dict:
        labels = self.param("labels_csv")
        out = {"received": len(self.rows)}
        if labels and Path(labels).is_file():
            out = score_rows(self.rows, read_labels(labels), self.classes)
        return out | ({"node": self.node_counts} if self.node_counts else {})

    def close(self) -> None:
        if self.csv_file:
            self.csv_file.close()
        if self.bag:
            self.bag.close()


def main(args: list[str] | None = None) -> None:
    import json

    rclpy.init(args=args)
    node = Recorder()
    try:
        spin_until_done(rclpy, node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        print(json.dumps(node.summary()), flush=True)
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
