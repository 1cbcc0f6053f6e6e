"""Image source -> inspection node -> recorder, three processes over DDS: labels from class
folders, every result recorded to CSV and to an MCAP bag, accuracy scored against the labels."""

from __future__ import annotations

import json

import cv2
import numpy as np
from ros_helpers import NodeProcess, ros  # noqa: F401  (ros: fixture)


def test_folder_source_to_recorder_scores_every_image(ros, tmp_path, elpv_data):
    from edgefpga.models import elpv

    idx = elpv.subset("test", elpv_data)[:12]
    folder = tmp_path / "cells"
    classes = ["functional", "defective"]
    for i in idx:
        label_dir = folder / classes[int(elpv_data.labels[i])]
        label_dir.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(label_dir / f"cell_{i}.png"), elpv_data.images[i])
    labels, results, bag = tmp_path / "labels.csv", tmp_path / "results.csv", tmp_path / "bag"
    params = tmp_path / "params.yaml"
    params.write_text("\n".join([
        "inspection:", "  ros__parameters:", "    model: elpv_defect", "    backend: onnx",
        "    reliable_input: true", "    queue_depth: 100",
        "image_source:", "  ros__parameters:", f"    source: {folder}", "    rate: 20.0", f"    labels_csv: {labels}",
        "recorder:", "  ros__parameters:", f"    csv: {results}", f"    bag: {bag}", f"    labels_csv: {labels}",
        "    expected: 12", "    idle_timeout: 20.0", ""]))
    nodes = [NodeProcess("edgefpga-inspection", params, tmp_path / "inspection.log"),
             NodeProcess("edgefpga-recorder", params, tmp_path / "recorder.log")]
    try:
        nodes[0].wait_for("engine:")
        source = NodeProcess("edgefpga-image-source", params, tmp_path / "source.log")
        nodes.append(source)
        assert nodes[1].proc.wait(timeout=120) == 0, nodes[1].output()[-2000:]
    finally:
        for node in nodes:
            node.stop()
    summary = json.loads(nodes[1].output().strip().splitlines()[-1])
    assert summary["received"] == summary["published"] == 12 and summary["missing"] == 0
    predicted = np.array([r.split(",")[3] for r in results.read_text().splitlines()[1:]], dtype=int)
    assert len(predicted) == 12 and summary["n"] == 12 and 0 <= summary["accuracy"] <= 1
    assert "published 12 images" in source.output()

    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    from edgefpga.ros_nodes.bag_types import register_result_types

    store = get_typestore(Stores.LATEST)
    register_result_types(store)
    with AnyReader([bag], default_typestore=store) as reader:
        msgs = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()]
    assert len(msgs) == 12 and {m.label for m in msgs} <= set(classes)
