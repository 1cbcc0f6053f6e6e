"""The inspection node: ``image`` in, a typed verdict out, health on ``/diagnostics``.

A lifecycle node: *configure* opens the Engine (a missing model or an unknown backend fails the
transition with the reason in the log and in diagnostics, instead of crashing), *activate*
subscribes and publishes, *deactivate* stops, *cleanup* closes the Engine. Run as a console
script it configures and activates itself (``autostart``), so it works without a lifecycle
manager; with ``autostart:=false`` a manager drives it through ``~/change_state``.

Inference runs on a worker thread, off the executor: the subscription callbacks only queue the
messages, so diagnostics, lifecycle and parameter services stay live during a long engine call.
Frames that arrive while the engine is busy follow ``queue_policy`` (frame_queue.py): ``latest``
(default) runs the newest and drops the older ones as stale; ``all`` batches every waiting frame
into the next engine call. Every message is accounted for in /diagnostics: ``received`` =
``images`` (answered) + ``errors`` (by kind) + ``dropped`` (by kind) + ``pending``.

Parameters are validated when set (ranges in their descriptors, the rest in a callback) and
applied together: each engine call takes one snapshot of them, so the threshold a result reports
is the one applied to it. ``backend`` changes only while unconfigured, ``reliable_input`` and
``queue_depth`` only while not active; a refused change says why.

Hot swap: setting ``model`` on a configured node (also while active) opens the new model beside
the running one, self-tests it on the last images the node saw (same classes, finite answers),
and switches between two engine calls; the set succeeds only then. Anything that fails (a missing
or corrupt model, other classes, a backend that cannot open it) refuses the change with the
reason and the old engine keeps serving: no message is lost or answered twice. ``model`` may name
a registry version, ``registry:<name>@<champion|candidate|N>`` (fleet/registry.py, at
``registry_uri``); results name what serves them in ``model_version``.

Topics (relative, so namespaces and remapping work):
  in   ``image`` (sensor_msgs/Image: mono8, mono16, bgr8, rgb8, any size), ``image/compressed``
  out  ``inspection/result`` (edgefpga_msgs/InspectionResult; with a grid, the most defective
       cell), ``inspection/results`` (InspectionResultArray, every cell; only with a grid),
       ``inspection/detections`` (edgefpga_msgs/DetectionArray: a detector's findings, class,
       score and centre in image pixels; only for a detector, a card whose output is a map),
       ``inspection/annotated`` (sensor_msgs/Image, bgr8: the image with each detection marked;
       only with ``annotated_image`` true, for rqt / Foxglove),
       ``/diagnostics`` (diagnostic_msgs/DiagnosticArray)

A bad message (wrong encoding, short data, zero or huge size, undecodable compressed data) and
any exception of a backend are logged, counted by kind in diagnostics, and the node goes on with
the next message. mono16 (and 16-bit PNG) pixels keep their top 8 of ``mono16_bits``
significant bits (``value >> (mono16_bits - 8)``; 12 for a 12-bit camera).
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest

from edgefpga.fleet.mining import CRITERIA, EscalationBudget, HardExampleFilter
from edgefpga.models.preprocess import ImageError
from edgefpga.runtime import EngineError, open as open_engine

from .escalation import Escalator
from .frame_queue import QUEUE_POLICIES, FrameQueue
from .images import BadImage, compressed_to_array, grid_cells, image_to_array

PARAMETERS = {  # name: (default, description)
    "model": ("build/elpv_defect", "build folder, model folder, zoo name or registry:<name>@<alias|version>; set "
                                   "while configured it is hot-swapped (opened, self-tested, switched)"),
    "registry_uri": ("", "MLflow registry of registry: models (default: $EDGEFPGA_REGISTRY, else ./registry)"),
    "hard_threshold": (0.0, "a result whose confidence (0 uniform .. 1 sure) is below this is hard (0: none)"),
    "hard_criterion": ("cross_entropy", "the confidence hard_threshold applies to: cross_entropy (Sedna's) or margin "
                                        "(top-1 minus top-2 probability)"),
    "escalation_budget": (0.0, "at most this share of results are hard: the least confident of the last 500 "
                               "among those under hard_threshold (0: no cap; hard_threshold 1: the budget alone)"),
    "cloud": ("", "Zenoh locator of the cloud service (tls/host:7447) hard images are escalated to; empty: none, "
                  "no image leaves the site (set while unconfigured)"),
    "cloud_certs": ("", "folder with the site's ca.crt and this cell's <cloud_identity>.crt/.key (edgefpga fleet "
                        "certs): mutual TLS, only answers signed under the site CA (set while unconfigured)"),
    "cloud_identity": ("", "this cell's identity in cloud_certs (set while unconfigured)"),
    "cloud_insecure": (False, "allow a plain tcp/ cloud off loopback without certificates (warned; set while "
                              "unconfigured)"),
    "cloud_deadline": (0.5, "seconds the cloud has to answer; then the edge verdict stands (set while unconfigured)"),
    "store": ("", "folder of the sample store that keeps every hard sample (fleet/store.py); empty: none "
                  "(set while unconfigured)"),
    "backend": ("auto", "auto, pynq, rtl, emulator or onnx (set while unconfigured)"),
    "defect_threshold": (0.5, "defect probability at or above which a cell is defective"),
    "grid_rows": (1, "split each image into grid_rows x grid_cols cells (a module image into its cells)"),
    "grid_cols": (1, "see grid_rows"),
    "annotated_image": (False, "a detector's findings drawn on the image, on inspection/annotated (bgr8; set "
                               "while inactive)"),
    "queue_policy": ("latest", "frames that arrive while the engine is busy: latest (run the newest, drop the "
                               "older as stale) or all (batch them into the next engine call)"),
    "max_pending": (256, "frames that may wait for the engine; beyond it the oldest is dropped (overflow)"),
    "mono16_bits": (16, "significant bits of mono16 / 16-bit PNG pixels: 8-bit pixel = value >> (bits - 8)"),
    "reliable_input": (False, "subscribe with reliable QoS (default: sensor-data QoS, best effort; set while inactive)"),
    "queue_depth": (10, "history depth of the subscriptions and the result publishers (set while inactive)"),
    "diagnostics_period": (1.0, "seconds between /diagnostics messages (read at start)"),
    "autostart": (True, "configure and activate at start, without a lifecycle manager (read at start)"),
}
RANGES = {
    "defect_threshold": FloatingPointRange(from_value=0.0, to_value=1.0, step=0.0),
    "hard_threshold": FloatingPointRange(from_value=0.0, to_value=1.0, step=0.0),
    "escalation_budget": FloatingPointRange(from_value=0.0, to_value=1.0, step=0.0),
    "cloud_deadline": FloatingPointRange(from_value=0.001, to_value=60.0, step=0.0),
    "grid_rows": IntegerRange(from_value=1, to_value=64, step=1),
    "grid_cols": IntegerRange(from_value=1, to_value=64, step=1),
    "max_pending": IntegerRange(from_value=1, to_value=100_000, step=1),
    "mono16_bits": IntegerRange(from_value=8, to_value=16, step=1),
    "queue_depth": IntegerRange(from_value=1, to_value=100_000, step=1),
    "diagnostics_period": FloatingPointRange(from_value=0.01, to_value=3600.0, step=0.0),
}
READ_ONLY = {"diagnostics_period", "autostart"}
SET_WHILE_UNCONFIGURED = {"backend", "registry_uri", "cloud", "cloud_deadline", "store", "cloud_certs",
                          "cloud_identity", "cloud_insecure"}
SELF_TEST_IMAGES = 4  # recent images a hot-swapped model must answer before it serves
SET_WHILE_NOT_ACTIVE = {"reliable_input", "queue_depth", "annotated_image"}
WINDOW = 1000  # latencies kept for the percentiles in diagnostics


def descriptor(name: str) -> ParameterDescriptor:
    """The declared description, range and read-only flag: rclpy refuses out-of-range values itself."""
    out = ParameterDescriptor(description=PARAMETERS[name][1], read_only=name in READ_ONLY)
    limits = RANGES.get(name)
    if isinstance(limits, FloatingPointRange):
        out.floating_point_range = [limits]
    elif isinstance(limits, IntegerRange):
        out.integer_range = [limits]
    return out


@dataclass(frozen=True)
class Settings:
    """The parameters one engine call uses, taken together (replaced as a whole on a change)."""

    defect_threshold: float
    hard: HardExampleFilter  # with a budget: stateful, kept while its own parameters stay (of)
    grid: tuple[int, int]
    queue_policy: str
    max_pending: int
    mono16_bits: int

    @classmethod
    def of(cls, node: "InspectionNode", previous: "Settings | None" = None) -> "Settings":
        """The node's parameters now. The hard-example filter of ``previous`` is kept when its own
        parameters did not change: its budget's window is the line's recent confidences, and a
        new one would start from an empty window (capping from scratch) at every unrelated change,
        a defect threshold tuned from rqt, say."""
        criterion, threshold, budget = (node.param(k) for k in ("hard_criterion", "hard_threshold", "escalation_budget"))
        hard = previous.hard if previous is not None else None
        if hard is None or (hard.criterion, hard.threshold, hard.budget.share if hard.budget else 0.0) != (
                criterion, threshold, budget):
            hard = HardExampleFilter(criterion, threshold, EscalationBudget(budget) if budget > 0 else None)
        return cls(node.param("defect_threshold"), hard,
                   (node.param("grid_rows"), node.param("grid_cols")),
                   node.param("queue_policy"), node.param("max_pending"), node.param("mono16_bits"))


@dataclass
class Pending:
    """A message waiting for the engine."""

    msg: Any
    decode: Callable
    received: float  # time.perf_counter() when the callback queued it


class InspectionStats:
    """Counts and recent latencies for diagnostics; updated by the worker, read by the timer."""

    def __init__(self):
        self.lock = threading.Lock()
        self.received = self.images = 0
        self.errors: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.events: Counter[str] = Counter()  # not per message (swaps): outside received = images + ...
        self.engine_ms: deque[float] = deque(maxlen=WINDOW)
        self.node_ms: deque[float] = deque(maxlen=WINDOW)
        self.cycles: deque[int] = deque(maxlen=WINDOW)
        self.last_error = ""
        self._period_start, self._period_images = time.monotonic(), 0

    def receive(self) -> None:
        with self.lock:
            self.received += 1

    def record(self, engine_ms: float, node_ms: float, cycles: int | None) -> None:
        with self.lock:
            self.images += 1
            self.engine_ms.append(engine_ms)
            self.node_ms.append(node_ms)
            if cycles is not None:
                self.cycles.append(cycles)

    def error(self, kind: str, message: str) -> None:
        with self.lock:
            self.errors[kind] += 1
            self.last_error = message

    def count(self, event: str) -> None:
        with self.lock:
            self.events[event] += 1

    def drop(self, kind: str, count: int = 1) -> None:
        with self.lock:
            self.dropped[kind] += count

    def rate(self) -> float:
        """Images per second since the previous call."""
        with self.lock:
            now = time.monotonic()
            rate = (self.images - self._period_images) / max(now - self._period_start, 1e-9)
            self._period_start, self._period_images = now, self.images
            return rate

    def values(self) -> dict[str, str]:
        with self.lock:
            out = {"received": str(self.received), "images": str(self.images),
                   "errors": str(sum(self.errors.values())), "dropped": str(sum(self.dropped.values()))}
            out |= {f"errors.{kind}": str(n) for kind, n in sorted(self.errors.items())}
            out |= {f"dropped.{kind}": str(n) for kind, n in sorted(self.dropped.items())}
            out |= {event: str(n) for event, n in sorted(self.events.items())}
            windows = {"engine_latency_ms": np.asarray(self.engine_ms), "node_latency_ms": np.asarray(self.node_ms)}
            cycles = np.asarray(self.cycles)
        for name, window in windows.items():
            if window.size:
                p50, p90, p99 = np.percentile(window, [50, 90, 99])
                out |= {f"{name}.p50": f"{p50:.3f}", f"{name}.p90": f"{p90:.3f}", f"{name}.p99": f"{p99:.3f}"}
        if cycles.size:
            out["accelerator_cycles.median"] = str(int(np.median(cycles)))
        return out


def result_msg(result, header, settings: Settings, roi: tuple[int, int, int, int] | None, model_version: str):
    """An edgefpga_msgs/InspectionResult from an Engine Result (the edge decided)."""
    from edgefpga_msgs.msg import InspectionResult

    msg = InspectionResult()
    msg.header = header
    msg.model_id, msg.backend, msg.label = result.model_id, result.backend, result.label
    msg.model_version = model_version
    msg.label_index, msg.defective, msg.score = result.label_index, result.defective, float(result.score)
    msg.defect_threshold = float(settings.defect_threshold)
    msg.class_names = list(result.classes)
    msg.class_scores = [float(v) for v in result.scores]
    msg.class_probabilities = [float(v) for v in result.probabilities]
    msg.edge_probabilities = list(msg.class_probabilities)
    msg.latency_ms = float(result.latency_ms)
    msg.accelerator_cycles = -1 if result.cycles is None else int(result.cycles)
    msg.confidence = float(result.confidence)
    msg.hard = settings.hard.is_hard(result)
    msg.decided_by = "edge"
    if roi is not None:
        msg.roi = RegionOfInterest(x_offset=roi[0], y_offset=roi[1], width=roi[2], height=roi[3])
    return msg


def detections_msg(result, header, settings: Settings, model_version: str):
    """An edgefpga_msgs/DetectionArray from a detector's Engine Result."""
    from edgefpga_msgs.msg import Detection, DetectionArray

    msg = DetectionArray(header=header, model_id=result.model_id, model_version=model_version, backend=result.backend,
                         threshold=float(settings.defect_threshold), latency_ms=float(result.latency_ms),
                         accelerator_cycles=-1 if result.cycles is None else int(result.cycles))
    msg.image_height, msg.image_width = result.image_size
    msg.detections = [Detection(label=d["label"], label_index=d["label_index"], score=float(d["score"]),
                                x=float(d["x"]), y=float(d["y"])) for d in result.detections]
    return msg


def annotated(image: np.ndarray, result, header) -> Image:
    """The image (as bgr8) with a circle and the score at each detection's centre."""
    import cv2

    from .images import array_to_image

    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    radius = max(4, min(canvas.shape[:2]) // 30)
    for d in result.detections:
        centre = (int(round(d["x"])), int(round(d["y"])))
        cv2.circle(canvas, centre, radius, (0, 0, 255), 2)
        cv2.putText(canvas, f"{d['score']:.2f}", (centre[0] + radius, centre[1]), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, (0, 255, 255), 1)
    msg = array_to_image(canvas, Image(), "bgr8")
    msg.header = header
    return msg


def resolve_model(spec: str, registry_uri: str) -> tuple[str, str | None]:
    """(what rt.open takes, the registry version's name) for ``registry:<name>@<alias|N>``: the
    version's build (or model) folder downloaded once under ``~/.cache/edgefpga/registry``;
    (spec, None) for anything else."""
    if not spec.startswith("registry:"):
        return spec, None
    from edgefpga.fleet.registry import ModelRegistry

    folder, chosen = ModelRegistry(registry_uri or None).fetch(spec)
    target = folder / "build" if (folder / "build").is_dir() else folder / "model"
    return str(target), f"{chosen.name} v{chosen.version}"


class InspectionNode(LifecycleNode):
    def __init__(self, name: str = "inspection", **kwargs):
        super().__init__(name, **kwargs)
        for key, (default, _) in PARAMETERS.items():
            self.declare_parameter(key, default, descriptor(key))
        self.engine = None
        self.escalator: Escalator | None = None
        self.model_version = ""
        self.recent: deque = deque(maxlen=SELF_TEST_IMAGES)  # the last images seen: a new model's self-test
        self.state_label = "unconfigured"
        for key in PARAMETERS:
            problem = self.parameter_problem(key, self.param(key))
            if problem:
                raise ValueError(f"parameter {key}: {problem}")
        self.settings = Settings.of(self)
        self.add_on_set_parameters_callback(self.validate_parameters)
        self.add_post_set_parameters_callback(self.apply_parameters)
        self.stats = InspectionStats()
        self.frames = FrameQueue()
        self.engine_lock = threading.RLock()  # the worker's engine call vs configure / cleanup
        self.io_lock = threading.Lock()  # the worker's publish vs activate / deactivate
        self._subscriptions, self._result_pub, self._array_pub = [], None, None
        self._detections_pub = self._annotated_pub = None
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.param("diagnostics_period"), self.publish_diagnostics)
        self._stopping = threading.Event()
        self.worker = threading.Thread(target=self._work, name=f"{name}-engine", daemon=True)
        self.worker.start()

    def param(self, name: str):
        return self.get_parameter(name).value

    # parameters -----------------------------------------------------------------------------
    def parameter_problem(self, name: str, value) -> str | None:
        """Why ``value`` cannot be set now (ranges and read-only are the descriptors' job)."""
        if name == "queue_policy" and value not in QUEUE_POLICIES:
            return f"must be one of {', '.join(QUEUE_POLICIES)}, got {value!r}"
        if name == "hard_criterion" and value not in CRITERIA:
            return f"must be one of {', '.join(CRITERIA)}, got {value!r}"
        if name in SET_WHILE_UNCONFIGURED and self.state_label != "unconfigured":
            return f"takes effect at configure and the node is {self.state_label}: deactivate and clean up first"
        if name in SET_WHILE_NOT_ACTIVE and self.state_label == "active":
            return "takes effect at activate: deactivate first"
        return None

    def validate_parameters(self, params) -> SetParametersResult:
        for p in params:
            problem = self.parameter_problem(p.name, p.value)
            if problem:
                return SetParametersResult(successful=False, reason=f"{p.name}: {problem}")
        swap = next((p for p in params if p.name == "model"), None)
        if swap is not None and self.engine is not None and swap.value != self.param("model"):
            problem = self.swap_model(swap.value)
            if problem:
                return SetParametersResult(successful=False, reason=f"model: {problem}")
        return SetParametersResult(successful=True)

    def apply_parameters(self, params) -> None:
        # one assignment: a batch sees the old or the new set, never a mix
        self.settings = Settings.of(self, previous=self.settings)

    # lifecycle ------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        model, backend = self.param("model"), self.param("backend")
        try:
            target, version = resolve_model(model, self.param("registry_uri"))
            engine = open_engine(target, backend=backend, defect_threshold=self.settings.defect_threshold)
        except Exception as exc:  # noqa: BLE001  (any backend's failure to start fails the transition, not the node)
            self.stats.error("configure", str(exc))
            self.get_logger().error(f"cannot configure with model={model!r} backend={backend!r}: {exc}")
            return TransitionCallbackReturn.FAILURE
        try:
            escalator = self.open_escalation(engine)
        except Exception as exc:  # noqa: BLE001  (a cloud with other classes, a store that cannot open)
            engine.close()
            self.stats.error("configure", str(exc))
            self.get_logger().error(f"cannot configure the escalation: {exc}")
            return TransitionCallbackReturn.FAILURE
        with self.engine_lock:
            self.engine, self.model_version, self.escalator = engine, version or engine.model_id, escalator
        self.get_logger().info(f"engine: {engine.describe()}")
        self.state_label = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        from edgefpga_msgs.msg import DetectionArray, InspectionResult, InspectionResultArray

        depth = self.param("queue_depth")
        reliable = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        inbound = reliable if self.param("reliable_input") else qos_profile_sensor_data
        events = SubscriptionEventCallbacks(message_lost=self._lost)
        with self.io_lock:
            self._result_pub = self.create_publisher(InspectionResult, "inspection/result", reliable)
            self._array_pub = self.create_publisher(InspectionResultArray, "inspection/results", reliable)
            self._detections_pub = self.create_publisher(DetectionArray, "inspection/detections", reliable)
            self._annotated_pub = (self.create_publisher(Image, "inspection/annotated", reliable)
                                   if self.param("annotated_image") else None)
            self._subscriptions = [
                self.create_subscription(Image, "image", lambda m: self.enqueue(m, image_to_array), inbound,
                                         event_callbacks=events),
                self.create_subscription(CompressedImage, "image/compressed",
                                         lambda m: self.enqueue(m, compressed_to_array), inbound,
                                         event_callbacks=events)]
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
        self.stop()
        self.state_label = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def stop(self) -> None:
        """Stop taking messages, finish the engine call in flight, close the engine."""
        self._stop_io()
        self._stopping.set()
        self.frames.close()
        if self.worker.is_alive() and threading.current_thread() is not self.worker:
            self.worker.join(timeout=30)
        self._close_engine()

    def _stop_io(self) -> None:
        with self.io_lock:
            for sub in self._subscriptions:
                self.destroy_subscription(sub)
            for pub in (self._result_pub, self._array_pub, self._detections_pub, self._annotated_pub):
                if pub is not None:
                    self.destroy_publisher(pub)
            self._subscriptions, self._result_pub, self._array_pub = [], None, None
            self._detections_pub = self._annotated_pub = None
        waiting = self.frames.drain()
        if waiting:
            self.stats.drop("inactive", len(waiting))

    def open_escalation(self, engine) -> Escalator | None:
        """The cloud client and the sample store the parameters ask for (escalation.py)."""
        cloud, store = self.param("cloud"), self.param("store")
        if not cloud and not store:
            return None
        client = sample_store = None
        if cloud:
            from edgefpga.fleet.cloud import CloudClient

            client = CloudClient(cloud, deadline_s=self.param("cloud_deadline"), classes=list(engine.classes),
                                 edge_model=engine.model_id, credentials=self.cloud_credentials(),
                                 insecure=self.param("cloud_insecure"))
        if store:
            from edgefpga.fleet.store import SampleStore

            sample_store = SampleStore(store)
        return Escalator(client, sample_store, self._publish_result, self.stats.count, self.get_logger().error)

    def cloud_credentials(self):
        """The cell's site credentials (``cloud_certs``, ``cloud_identity``), or None without them."""
        certs, identity = self.param("cloud_certs"), self.param("cloud_identity")
        if not certs:
            return None
        from edgefpga.fleet.trust import Credentials, TrustError

        if not identity:
            raise TrustError(f"cloud_certs={certs!r} needs cloud_identity: which cell's certificate in it to use")
        return Credentials.of(certs, identity)

    def _publish_result(self, msg) -> None:
        with self.io_lock:
            if self._result_pub is not None:
                self._result_pub.publish(msg)

    def swap_model(self, model: str) -> str | None:
        """Open ``model`` beside the running engine, self-test it, switch between two engine
        calls; None when it serves, else why not (the running engine is untouched)."""
        started = time.perf_counter()
        try:
            target, version = resolve_model(model, self.param("registry_uri"))
            engine = open_engine(target, backend=self.param("backend"), defect_threshold=self.settings.defect_threshold)
        except Exception as exc:  # noqa: BLE001  (whatever opening raises refuses the swap, nothing more)
            self.stats.count("swaps_refused")
            self.get_logger().error(f"swap to {model!r} refused: cannot open it: {exc}")
            return f"cannot open {model!r}: {exc}"
        problem = self.self_test(engine)
        if problem:
            engine.close()
            self.stats.count("swaps_refused")
            self.get_logger().error(f"swap to {model!r} refused: {problem}")
            return f"{model!r} failed its self-test: {problem}"
        with self.engine_lock:  # between two engine calls
            old, self.engine, self.model_version = self.engine, engine, version or engine.model_id
        old.close()
        self.stats.count("swaps")
        self.get_logger().info(f"swapped to {self.model_version} ({engine.describe()}) in "
                               f"{time.perf_counter() - started:.1f} s")
        return None

    def self_test(self, engine) -> str | None:
        """The new engine on the last images seen (a gray image before any): the running model's
        classes, a finite probability for each."""
        if self.engine is not None and list(engine.classes) != list(self.engine.classes):
            return f"its classes {list(engine.classes)} are not the running model's {list(self.engine.classes)}"
        images = list(self.recent) or [np.full((64, 64), 128, np.uint8)]
        try:
            results = engine.infer(images)
        except Exception as exc:  # noqa: BLE001
            return f"{type(exc).__name__}: {exc}"
        if len(results) != len(images) or not all(np.isfinite(r.probabilities).all() for r in results):
            return "it gave no finite answer for every test image"
        return None

    def _close_engine(self) -> None:
        with self.engine_lock:
            if self.engine is not None:
                self.engine.close()
                self.engine = None
            if self.escalator is not None:
                self.escalator.close()
                self.escalator = None

    # work -----------------------------------------------------------------------------------
    def enqueue(self, msg, decode) -> None:
        """The subscription callback: queue the message for the worker, nothing more."""
        self.stats.receive()
        settings = self.settings
        overflow = self.frames.put(Pending(msg, decode, time.perf_counter()), settings.max_pending)
        if overflow:
            self.stats.drop("stale" if settings.queue_policy == "latest" else "overflow", len(overflow))

    def _lost(self, info) -> None:
        """Messages the middleware dropped before they reached the callback (QoS), counted."""
        self.stats.drop("qos_lost", info.total_count_change)

    def _work(self) -> None:
        """The worker thread: engine calls until the node stops. Nothing a message or a backend
        raises ends it."""
        while not self._stopping.is_set():
            settings, engine = self.settings, self.engine
            max_batch = engine.backend.max_batch if engine is not None else 1
            batch, stale = self.frames.take(settings.queue_policy, max_batch, timeout_s=0.2)
            if stale:
                self.stats.drop("stale", len(stale))
            if not batch:
                continue
            try:
                self.serve(batch, settings)
            except BaseException as exc:  # noqa: BLE001  (the last line of defence: count, log, go on)
                detail = traceback.format_exc(limit=3)
                for pending in batch:
                    self._reject(pending, f"unexpected.{type(exc).__name__}", f"{exc}\n{detail}")

    def serve(self, batch: list[Pending], settings: Settings) -> None:
        """Decode the batch's messages, run every cell of every one in one engine call, publish."""
        decoded = []
        for pending in batch:
            try:
                image = pending.decode(pending.msg, settings.mono16_bits)
                decoded.append((pending, grid_cells(image, *settings.grid)))
                self.recent.append(image)
            except BadImage as exc:
                self._reject(pending, exc.kind, str(exc))
            except Exception as exc:  # noqa: BLE001  (a decoder's surprise is this message's problem only)
                self._reject(pending, f"decode.{type(exc).__name__}", str(exc))
        if decoded:
            self.infer_and_publish(decoded, settings)

    def infer_and_publish(self, decoded: list, settings: Settings) -> None:
        with self.engine_lock:
            if self.engine is None:
                for pending, _ in decoded:
                    self._reject(pending, "inactive", "the engine was closed before this image ran")
                return
            try:
                results = self.engine.infer([cell for _, cells in decoded for cell, _ in cells],
                                            defect_threshold=settings.defect_threshold)
            except ImageError as exc:
                if len(decoded) > 1:  # one bad image in a batch: run each alone, so only it fails
                    for item in decoded:
                        self.infer_and_publish([item], settings)
                    return
                return self._reject(decoded[0][0], "image", str(exc))
            except Exception as exc:  # noqa: BLE001  (EngineError, or anything else a backend raises)
                kind = "backend" if isinstance(exc, EngineError) else f"backend.{type(exc).__name__}"
                for pending, _ in decoded:
                    self._reject(pending, kind, f"{type(exc).__name__}: {exc}")
                return
        done = 0
        for pending, cells in decoded:
            mine, done = results[done:done + len(cells)], done + len(cells)
            self.publish(pending, mine, cells, settings)

    def _reject(self, pending: Pending, kind: str, message: str) -> None:
        stamp = pending.msg.header.stamp
        self.stats.error(kind, message)
        self.get_logger().error(f"image at {stamp.sec}.{stamp.nanosec:09d} ({pending.msg.header.frame_id!r}) "
                                f"dropped: {message}")

    def publish(self, pending: Pending, results: list, cells: list, settings: Settings) -> None:
        """The results of one message: a hard whole-image result goes through the escalator
        (published when the cloud answers or its deadline passes), the rest at once."""
        header, version, escalator = pending.msg.header, self.model_version, self.escalator
        rois = [roi for _, roi in cells]
        with self.io_lock:
            if self._result_pub is None:
                return self._reject(pending, "inactive", "the node was deactivated while this image ran")
            single = result_msg(results[0], header, settings, None, version) if settings.grid == (1, 1) else None
            if single is not None and not (single.hard and escalator is not None):
                self._result_pub.publish(single)
            if single is not None and results[0].detections is not None:  # a detector: where, not only whether
                self._detections_pub.publish(detections_msg(results[0], header, settings, version))
                if self._annotated_pub is not None:
                    self._annotated_pub.publish(annotated(cells[0][0], results[0], header))
            elif single is None:
                from edgefpga_msgs.msg import InspectionResultArray

                msgs = [result_msg(r, header, settings, roi, version) for r, roi in zip(results, rois)]
                self._array_pub.publish(InspectionResultArray(
                    header=header, grid_rows=settings.grid[0], grid_cols=settings.grid[1],
                    any_defective=any(c.defective for c in msgs), results=msgs))
                self._result_pub.publish(max(msgs, key=lambda c: c.score))
        if single is not None and single.hard and escalator is not None:
            escalator.handle(single, cells[0][0], results[0], version)
        node_ms = (time.perf_counter() - pending.received) * 1e3
        self.stats.record(results[0].latency_ms * len(results), node_ms, results[0].cycles)

    def publish_diagnostics(self) -> None:
        engine = self.engine
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: edgefpga inspection",
                                  hardware_id=engine.model_id if engine else "")
        values = self.stats.values()
        if self.state_label != "active":
            status.level, status.message = DiagnosticStatus.WARN, f"{self.state_label}: {self.stats.last_error or 'not serving'}"
        elif self.stats.last_error:
            status.level, status.message = DiagnosticStatus.WARN, f"{values['errors']} bad message(s); last: {self.stats.last_error}"
        else:
            status.level, status.message = DiagnosticStatus.OK, "serving"
        settings = self.settings
        values = {"state": self.state_label, "model": self.param("model"), "model_version": self.model_version,
                  "backend": engine.backend_name if engine else self.param("backend"),
                  "queue_policy": settings.queue_policy, "defect_threshold": f"{settings.defect_threshold:g}",
                  "pending": str(len(self.frames)), "rate_hz": f"{self.stats.rate():.2f}"} | values
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    try:
        node = InspectionNode()
    except (ValueError, InvalidParameterValueException) as exc:
        print(f"edgefpga-inspection: error: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        if node.param("autostart"):
            node.trigger_configure()
            if node.state_label == "inactive":
                node.trigger_activate()
        # one thread: rclpy's MultiThreadedExecutor starved this timer and grew the node's memory under
        # a 30 Hz stream (ros2/rclpy#1223; docs/ros.md); inference runs on the worker thread anyway
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
