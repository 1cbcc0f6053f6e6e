"""The image source: publishes ``image`` (sensor_msgs/Image) from a folder, the ELPV split or a
ROS 2 bag, at a fixed rate, like a camera on an inspection line.

Labels, where the source has them (class subfolders, ELPV), are written to ``labels_csv`` keyed
by the header stamp each image was published with, so a recorder can score the results.

Parameters: ``source`` (a folder, ``elpv:<subset>[:N]`` or a bag folder / .mcap / .db3 file),
``bag_topic`` (the Image topic in a bag; default: the first one), ``rate`` (Hz), ``loop``,
``frame_id``, ``encoding`` (mono8, bgr8 or rgb8 for what is sent), ``reliable`` (QoS),
``labels_csv`` (empty: none), ``start_delay`` (seconds before the first image),
``wait_for_subscribers`` (start only once this many subscribers matched: with reliable QoS an
image published before discovery completes is lost to late joiners).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import rclpy
import rclpy.task
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from .images import CHANNELS, array_to_image
from .node_io import open_csv, spin_until_done

PARAMETERS = {
    "source": "elpv:test",
    "bag_topic": "",
    "rate": 10.0,
    "loop": False,
    "frame_id": "camera",
    "encoding": "mono8",
    "reliable": True,
    "queue_depth": 100,
    "labels_csv": "",
    "start_delay": 1.0,
    "wait_for_subscribers": 1,
}


LINGER_S = 2.0  # after the last image, keep the node up so reliable QoS can deliver it


@dataclass
class Frame:
    image: np.ndarray  # 8-bit gray or BGR
    name: str
    label: str  # class name, or "" where unknown


def folder_frames(folder: Path) -> Iterator[Frame]:
    from edgefpga.models.imagefiles import IMAGE_SUFFIXES, read_image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    for path in files:
        yield Frame(read_image(path), str(path), path.parent.name if path.parent != folder else "")


def elpv_frames(spec: str) -> Iterator[Frame]:
    from edgefpga.runtime.inputs import elpv_inputs

    inputs = elpv_inputs(spec)
    classes = ["functional", "defective"]
    for image, name, label in zip(inputs.images, inputs.names, inputs.labels):
        yield Frame(image, name, classes[int(label)])


def bag_frames(path: Path, topic: str) -> Iterator[Frame]:
    """sensor_msgs/Image messages of a ROS 2 bag (sqlite3 or MCAP), read with rosbags."""
    from rosbags.highlevel import AnyReader

    from .images import image_to_array

    with AnyReader([path]) as reader:
        connections = [c for c in reader.connections if c.msgtype == "sensor_msgs/msg/Image"
                       and (not topic or c.topic == topic)]
        if not connections:
            raise ValueError(f"{path}: no sensor_msgs/msg/Image topic{f' named {topic}' if topic else ''}")
        for connection, _, raw in reader.messages(connections=connections[:1]):
            msg = reader.deserialize(raw, connection.msgtype)
            yield Frame(np.array(image_to_array(msg)), f"{connection.topic}@{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}", "")


def frames_from(source: str, bag_topic: str = "") -> Iterator[Frame]:
    path = Path(source)
    if source.startswith("elpv:"):
        return elpv_frames(source)
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        return folder_frames(path)
    if path.exists():
        return bag_frames(path, bag_topic)
    raise ValueError(f"source {source!r}: not a folder, a bag or elpv:<subset>[:N]")


class ImageSource(Node):
    def __init__(self, name: str = "image_source", **kwargs):
        super().__init__(name, **kwargs)
        for key, default in PARAMETERS.items():
            self.declare_parameter(key, default)
        encoding = self.param("encoding")
        if encoding not in CHANNELS:
            raise ValueError(f"encoding {encoding!r}: use one of {', '.join(CHANNELS)}")
        qos = (QoSProfile(depth=self.param("queue_depth"), reliability=ReliabilityPolicy.RELIABLE,
                          history=HistoryPolicy.KEEP_LAST) if self.param("reliable") else qos_profile_sensor_data)
        self.publisher = self.create_publisher(Image, "image", qos)
        self.frames = list(frames_from(self.param("source"), self.param("bag_topic")))
        if not self.frames:
            raise ValueError(f"source {self.param('source')!r} holds no images")
        self.sent = 0
        self.labels_file = open_csv(self.param("labels_csv"), ["stamp_ns", "name", "label"])
        self.get_logger().info(f"{len(self.frames)} images from {self.param('source')} at {self.param('rate')} Hz")
        self._start = self.create_timer(self.param("start_delay"), self._begin)
        self.timer = None

    def param(self, name: str):
        return self.get_parameter(name).value

    def _begin(self) -> None:
        if self.publisher.get_subscription_count() < self.param("wait_for_subscribers"):
            return  # the start timer fires again
        self._start.cancel()
        self.timer = self.create_timer(1.0 / self.param("rate"), self.publish_next)

    @property
    def done(self) -> bool:
        return self.sent >= len(self.frames) and not self.param("loop")

    def publish_next(self) -> None:
        if self.done:
            self.timer.cancel()
            return
        frame = self.frames[self.sent % len(self.frames)]
        encoding = self.param("encoding")
        image = frame.image
        if CHANNELS[encoding] == 3 and image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif CHANNELS[encoding] == 1 and image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        msg = array_to_image(image, Image(), encoding)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.param("frame_id")
        self.publisher.publish(msg)
        if self.labels_file:
            stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            csv.writer(self.labels_file).writerow([stamp_ns, frame.name, frame.label])
            self.labels_file.flush()
        self.sent += 1

    def close(self) -> None:
        if self.labels_file:
            self.labels_file.close()


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = ImageSource()
    try:
        spin_until_done(rclpy, node)
        node.get_logger().info(f"published {node.sent} images")
        rclpy.spin_until_future_complete(node, rclpy.task.Future(), timeout_sec=LINGER_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
