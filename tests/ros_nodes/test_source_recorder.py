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
        "    reliable_input: true", "    queue_depth: 100", "    queue_policy: all",  # every image scored
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


def write_image_bag(folder, images: list) -> None:
    """A ROS 2 bag (MCAP) with sensor_msgs/Image messages on /camera/image_raw, written with rosbags."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.LATEST)
    Image, Header, Time = (store.types[n] for n in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                      "builtin_interfaces/msg/Time"))
    with Writer(folder, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=store)
        for i, image in enumerate(images):
            msg = Image(header=Header(stamp=Time(sec=i, nanosec=0), frame_id="cam"), height=image.shape[0],
                        width=image.shape[1], encoding="mono8", is_bigendian=0, step=image.shape[1],
                        data=image.reshape(-1))
            writer.write(conn, i * 1_000_000, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def test_bag_source_publishes_the_bags_images(ros, tmp_path):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from ros_helpers import spin_until

    from edgefpga.ros_nodes.images import image_to_array

    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (20 + i, 30), dtype=np.uint8) for i in range(3)]
    write_image_bag(tmp_path / "bag", images)
    node = ros.create_node("bag_listener")
    received = []
    node.create_subscription(Image, "image", received.append, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    params = tmp_path / "source.yaml"
    params.write_text(f"image_source:\n  ros__parameters:\n    source: {tmp_path / 'bag'}\n    rate: 20.0\n")
    source = NodeProcess("edgefpga-image-source", params, tmp_path / "source.log")
    try:
        assert spin_until(node, lambda: len(received) == 3, 60), source.output()[-2000:]
    finally:
        source.stop()
        node.destroy_node()
    assert all(np.array_equal(image_to_array(m), img) for m, img in zip(received, images))
    assert "3 images from" in source.output()
