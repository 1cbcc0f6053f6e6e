"""The inspection node: ``image`` in, a typed verdict out, health on ``/diagnostics``.

A lifecycle node: *configure* opens the Engine (a missing model or an unknown backend fails the
transition with the reason in the log and in diagnostics, instead of crashing), *activate*
subscribes and publishes, *deactivate* stops, *cleanup* closes the Engine. Run as a console
script it configures and activates itself (``autostart``), so it works without a lifecycle
manager; with ``autostart:=false`` a manager drives it through ``~/change_state``.

Topics (relative, so namespaces and remapping work):
  in   ``image`` (sensor_msgs/Image: mono8, bgr8, rgb8, any size), ``image/compressed``
  out  ``inspection/result`` (edgefpga_msgs/InspectionResult; with a grid, the most defective
       cell), ``inspection/results`` (InspectionResultArray, every cell; only with a grid),
       ``/diagnostics`` (diagnostic_msgs/DiagnosticArray)

A bad message (wrong encoding, short data, zero or huge size, undecodable compressed data) is
logged, counted in diagnostics, and the node goes on with the next one.
"""

from __future__ import annotations

import time
from collections import Counter, deque

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest

from edgefpga.models.card import ModelCardError
from edgefpga.models.preprocess import ImageError
from edgefpga.runtime import EngineError, open as open_engine

from .images import BadImage, compressed_to_array, grid_cells, image_to_array

PARAMETERS = {  # name: (default, description)
    "model": ("build/elpv_defect", "build folder, model folder or zoo name"),
    "backend": ("auto", "auto, pynq, rtl, emulator or onnx"),
    "defect_threshold": (0.5, "defect probability at or above which a cell is defective"),
    "grid_rows": (1, "split each image into grid_rows x grid_cols cells (a module image into its cells)"),
    "grid_cols": (1, "see grid_rows"),
    "reliable_input": (False, "subscribe with reliable QoS (default: sensor-data QoS, best effort)"),
    "queue_depth": (10, "history depth of the subscriptions and the result publishers"),
    "diagnostics_period": (1.0, "seconds between /diagnostics messages"),
    "autostart": (True, "configure and activate at start (without a lifecycle manager)"),
}
WINDOW = 1000  # latencies kept for the percentiles in diagnostics


class InspectionStats:
    """Counts and recent latencies for diagnostics."""

    def __init__(self):
        self.images = 0
        self.errors: Counter[str] = Counter()
        self.engine_ms: deque[float] = deque(maxlen=WINDOW)
        self.node_ms: deque[float] = deque(maxlen=WINDOW)
        self.cycles: deque[int] = deque(maxlen=WINDOW)
        self.last_error = ""
        self._period_start, self._period_images = time.monotonic(), 0

    def record(self, engine_ms: float, node_ms: float, cycles: int | None) -> None:
        self.images += 1
        self.engine_ms.append(engine_ms)
        self.node_ms.append(node_ms)
        if cycles is not None:
            self.cycles.append(cycles)

    def error(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        self.last_error = message

    def rate(self) -> float:
        """Images per second since the previous call."""
        now = time.monotonic()
        rate = (self.images - self._period_images) / max(now - self._period_start, 1e-9)
        self._period_start, self._period_images = now, self.images
        return rate

    def values(self) -> dict[str, str]:
        out = {"images": str(self.images), "errors": str(sum(self.errors.values()))}
        out |= {f"errors.{kind}": str(n) for kind, n in sorted(self.errors.items())}
        for name, window in (("engine_latency_ms", self.engine_ms), ("node_latency_ms", self.node_ms)):
            if window:
                p50, p90, p99 = np.percentile(np.asarray(window), [50, 90, 99])
                out |= {f"{name}.p50": f"{p50:.3f}", f"{name}.p90": f"{p90:.3f}", f"{name}.p99": f"{p99:.3f}"}
        if self.cycles:
            out["accelerator_cycles.median"] = str(int(np.median(np.asarray(self.cycles))))
        return out


def result_msg(result, header, threshold: float, roi: tuple[int, int, int, int] | None):
    """An edgefpga_msgs/InspectionResult from an Engine Result."""
    from edgefpga_msgs.msg import InspectionResult

    msg = InspectionResult()
    msg.header = header
    msg.model_id, msg.backend, msg.label = result.model_id, result.backend, result.label
    msg.label_index, msg.defective, msg.score = result.label_index, result.defective, float(result.score)
    msg.defect_threshold = float(threshold)
    msg.class_names = list(result.classes)
    msg.class_scores = [float(v) for v in result.scores]
    msg.class_probabilities = [float(v) for v in result.probabilities]
    msg.latency_ms = float(result.latency_ms)
    msg.accelerator_cycles = -1 if result.cycles is None else int(result.cycles)
    if roi is not None:
        msg.roi = RegionOfInterest(x_offset=roi[0], y_offset=roi[1], width=roi[2], height=roi[3])
    return msg


class InspectionNode(LifecycleNode):
    def __init__(self, name: str = "inspection", **kwargs):
        super().__init__(name, **kwargs)
        for key, (default, description) in PARAMETERS.items():
            self.declare_parameter(key, default)
        self.engine = None
        self.stats = InspectionStats()
        self.state_label = "unconfigured"
        self._subscriptions, self._result_pub, self._array_pub = [], None, None
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.param("diagnostics_period"), self.publish_diagnostics)

    def param(self, name: str):
        return self.get_parameter(name).value

    # lifecycle ------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        model, backend = self.param("model"), self.param("backend")
        try:
            self.engine = open_engine(model, backend=backend, defect_threshold=self.param("defect_threshold"))
        except (EngineError, ModelCardError, ValueError) as exc:
            self.stats.error("configure", str(exc))
            self.get_logger().error(f"cannot configure with model={model!r} backend={backend!r}: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"engine: {self.engine.describe()}")
        self.state_label = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        from edgefpga_msgs.msg import InspectionResult, InspectionResultArray

        depth = self.param("queue_depth")
        reliable = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        inbound = reliable if self.param("reliable_input") else qos_profile_sensor_data
        self._result_pub = self.create_publisher(InspectionResult, "inspection/result", reliable)
        if self.grid != (1, 1):
            self._array_pub = self.create_publisher(InspectionResultArray, "inspection/results", reliable)
        self._subscriptions = [
            self.create_subscription(Image, "image", lambda m: self.process_image(m, image_to_array), inbound),
            self.create_subscription(CompressedImage, "image/compressed",
                                     lambda m: self.process_image(m, compressed_to_array), inbound)]
        self.state_label = "active"
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_io()
        self.state_label = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._close_engine()
        self.state_label = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_io()
        self._close_engine()
        self.state_label = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def _stop_io(self) -> None:
        for sub in self._subscriptions:
            self.destroy_subscription(sub)
        for pub in (self._result_pub, self._array_pub):
            if pub is not None:
                self.destroy_publisher(pub)
        self._subscriptions, self._result_pub, self._array_pub = [], None, None

    def _close_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    # work -----------------------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        return max(1, self.param("grid_rows")), max(1, self.param("grid_cols"))

    def process_image(self, msg, decode) -> None:
        """One image message: decode, infer (every grid cell in one engine call), publish."""
        received = time.perf_counter()
        try:
            image = decode(msg)
            cells = grid_cells(image, *self.grid)
            results = self.engine.infer([cell for cell, _ in cells])
        except BadImage as exc:
            return self._reject(exc.kind, f"{exc}", msg)
        except ImageError as exc:
            return self._reject("image", str(exc), msg)
        except EngineError as exc:
            return self._reject("backend", str(exc), msg)
        self.publish(msg.header, results, [roi for _, roi in cells])
        node_ms = (time.perf_counter() - received) * 1e3
        self.stats.record(results[0].latency_ms * len(results), node_ms, results[0].cycles)

    def _reject(self, kind: str, message: str, msg) -> None:
        stamp = msg.header.stamp
        self.stats.error(kind, message)
        self.get_logger().error(f"image at {stamp.sec}.{stamp.nanosec:09d} ({msg.header.frame_id!r}) dropped: {message}")

    def publish(self, header, results: list, rois: list) -> None:
        threshold = self.param("defect_threshold")
        whole = self.grid == (1, 1)
        if whole:
            self._result_pub.publish(result_msg(results[0], header, threshold, None))
            return
        from edgefpga_msgs.msg import InspectionResultArray

        cells = [result_msg(r, header, threshold, roi) for r, roi in zip(results, rois)]
        array = InspectionResultArray(header=header, grid_rows=self.grid[0], grid_cols=self.grid[1],
                                      any_defective=any(c.defective for c in cells), results=cells)
        self._array_pub.publish(array)
        self._result_pub.publish(max(cells, key=lambda c: c.score))

    def publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: edgefpga inspection",
                                  hardware_id=self.engine.model_id if self.engine else "")
        errors = sum(self.stats.errors.values())
        if self.state_label != "active":
            status.level, status.message = DiagnosticStatus.WARN, f"{self.state_label}: {self.stats.last_error or 'not serving'}"
        elif self.stats.last_error:
            status.level, status.message = DiagnosticStatus.WARN, f"{errors} bad message(s); last: {self.stats.last_error}"
        else:
            status.level, status.message = DiagnosticStatus.OK, "serving"
        values = {"state": self.state_label, "model": self.param("model"),
                  "backend": self.engine.backend_name if self.engine else self.param("backend"),
                  "rate_hz": f"{self.stats.rate():.2f}"} | self.stats.values()
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = InspectionNode()
    try:
        if node.param("autostart"):
            node.trigger_configure()
            if node.state_label == "inactive":
                node.trigger_activate()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop_io()
        node._close_engine()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
