"""What a layer kind's capability rule is made of (DESIGN.md contract 8): the refusal it raises,
the view of the user's graph its checks may ask, the checks several kinds share (windows,
ceil_mode), and the row a kind adds to the capability table (hw/capabilities.py assembles the
table from the kinds' rows; docs/onnx-support.md is generated from it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

MAX_KERNEL = 16  # per axis: the line buffer holds kernel + stride rows (rounded up to a power of two)
MAX_STRIDE = 8


class Refusal(Exception):
    """A node outside the table: ``attribute`` names what is wrong, the message says why."""

    def __init__(self, attribute: str, reason: str):
        super().__init__(reason)
        self.attribute = attribute
        self.reason = reason


class GraphView:
    """What a check may ask about the user's graph: constants, shapes (ONNX shape inference),
    producers and consumers, the graph output."""

    def __init__(self, model: onnx.ModelProto):
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001 -- shapes are a help for the checks, not a requirement
            inferred = model
        graph = inferred.graph
        self.model = model
        self.shapes: dict[str, list[int]] = {}
        for value in (*graph.input, *graph.value_info, *graph.output):
            dims = value.type.tensor_type.shape.dim
            if value.type.tensor_type.HasField("shape"):
                self.shapes[value.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
        self.constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            elif node.op_type == "Shape" and static_shape(node, self.shapes.get(node.input[0])) is not None:
                self.constants[node.output[0]] = static_shape(node, self.shapes[node.input[0]])
            elif node.input and all(t in self.constants for t in node.input if t):
                self.fold(node)
        self.outputs = {o.name for o in graph.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.producer: dict[str, onnx.NodeProto] = {}
        for node in model.graph.node:
            for t in node.input:
                if t:  # "" is an optional input left out (Resize's roi), not a tensor
                    self.consumers.setdefault(t, []).append(node)
            for t in node.output:
                self.producer[t] = node

    def fold(self, node: onnx.NodeProto) -> None:
        """A node of constants only (a reshaped weight) is a constant too, as conversion folds it."""
        from onnx.reference import ReferenceEvaluator

        opset = [o for o in self.model.opset_import if o.domain in ("", "ai.onnx")]
        graph = onnx.helper.make_graph(
            [node], "fold", [], [onnx.helper.make_empty_tensor_value_info(t) for t in node.output if t],
            [numpy_helper.from_array(self.constants[t], t) for t in dict.fromkeys(node.input) if t])
        try:
            values = ReferenceEvaluator(onnx.helper.make_model(graph, opset_imports=opset)).run(None, {})
        except Exception:  # noqa: BLE001 -- not foldable: the node's own row judges it
            return
        self.constants.update(zip([t for t in node.output if t], values))

    def constant(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray:
        if index >= len(node.input) or node.input[index] not in self.constants:
            raise Refusal(what, "must be a constant (an initializer); the accelerator keeps it in ROM")
        return self.constants[node.input[index]]

    def channels(self, tensor: str) -> int | None:
        shape = self.shapes.get(tensor)
        return shape[1] if shape and len(shape) >= 2 and shape[1] > 0 else None


def static_shape(node: onnx.NodeProto, shape: list[int] | None) -> np.ndarray | None:
    """The value of a Shape node of a tensor whose every dimension is known (its ``start`` and
    ``end``, opset 15, applied), or None: the TorchScript exporter computes F.interpolate(size=)'s
    sizes from the map's Shape, which is a constant once the input's size is fixed."""
    if shape is None or any(d <= 0 for d in shape):
        return None
    start, end = attribute(node, "start", 0), attribute(node, "end", len(shape))
    return np.asarray(shape[start:end], np.int64)


def attribute(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ---- checks shared by several rows ---------------------------------------------------------------

def per_channel(value: np.ndarray, shape: list[int] | None) -> np.ndarray | None:
    """The values, one for all channels or one per channel (1-D, length 1 or C), that an
    elementwise op applies with the constant ``value`` to a tensor of ``shape`` [N, C, ...]; None
    when the constant does anything else. ONNX broadcasts as numpy does: the LAST axes align, so
    a constant is per channel only when, padded with leading ones to the tensor's rank, every
    axis but the channel axis is 1: a scalar, [1], [C, 1, 1] or [1, C, 1, 1] on a map
    [N, C, H, W], [C] or [1, C] on features [N, C]. A [C] on a map is one value per column (it
    varies along the width; with a width of 1 it widens the map), so it is None. An unknown
    shape (after a QONNX quantizer, which ONNX's shape inference does not know) takes a single
    value only, of a map's rank at most; the graph rewrite, where every shape is known, asks again."""
    value = np.asarray(value)
    if not shape or len(shape) < 2 or shape[1] <= 0:
        return value.reshape(1) if value.size == 1 and value.ndim <= 4 else None
    if value.ndim > len(shape):
        return None
    padded = (1,) * (len(shape) - value.ndim) + value.shape
    if any(size != 1 for axis, size in enumerate(padded) if axis != 1) or padded[1] not in (1, shape[1]):
        return None
    return value.reshape(-1)


def broadcast_refusal(node: onnx.NodeProto, index: int, value: np.ndarray, shape: list[int] | None) -> Refusal:
    """The one-line refusal of a constant that is not per channel (:func:`per_channel`): what ONNX's
    broadcasting makes of it instead."""
    what = f"a constant of shape {list(np.shape(value))}"
    if not shape or len(shape) < 2 or shape[1] <= 0:
        why = "on a tensor of unknown shape (only a single value is built there)"
    else:
        names = dict(enumerate("NCHW")) if len(shape) == 4 else {0: "N", 1: "C"}
        padded = (1,) * max(0, len(shape) - np.ndim(value)) + tuple(np.shape(value))
        varying = [names.get(a, f"axis {a}") for a, size in enumerate(padded[-len(shape):])
                   if size != 1 and a != 1]
        if np.ndim(value) > len(shape):
            why = f"raises the rank of the {len(shape)}-D tensor {shape}"
        elif varying:
            why = (f"on the tensor {shape} varies along {'/'.join(varying)} (ONNX broadcasting aligns the last "
                   "axes, not the channels)")
        else:
            why = f"does not broadcast to the tensor {shape} channel by channel"
    return Refusal(f"input {index}", f"{what} {why}: only one value, or one per channel ([C, 1, 1] or "
                   "[1, C, 1, 1] on a map, [C] on features), is built")


def check_spatial(node: onnx.NodeProto, kernel: list[int]) -> None:
    """2-D windows within the line buffer's reach; no dilation; padding smaller than the window."""
    if len(kernel) != 2:
        raise Refusal("kernel_shape", f"{len(kernel)}-D windows: only 2-D (an image) is built")
    if any(k < 1 or k > MAX_KERNEL for k in kernel):
        raise Refusal("kernel_shape", f"{kernel}: each side must be 1..{MAX_KERNEL}")
    strides = list(attribute(node, "strides", [1, 1]))
    if any(s < 1 or s > MAX_STRIDE for s in strides):
        raise Refusal("strides", f"{strides}: each stride must be 1..{MAX_STRIDE}")
    dilations = list(attribute(node, "dilations", [1, 1]))
    if any(d != 1 for d in dilations):
        raise Refusal("dilations", f"{dilations}: dilated windows are not built (the line buffer reads adjacent "
                      "pixels); use a larger kernel or strides")
    pads = list(attribute(node, "pads", [0, 0, 0, 0]))
    if len(pads) == 4 and any(p >= k for p, k in zip(pads, kernel * 2)):
        raise Refusal("pads", f"{pads}: padding must be smaller than the window {kernel} on every side")
    auto_pad = text(attribute(node, "auto_pad", "NOTSET"))
    if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise Refusal("auto_pad", f"unknown auto_pad {auto_pad}")


def check_ceil_mode(node: onnx.NodeProto) -> None:
    if attribute(node, "ceil_mode", 0):
        raise Refusal("ceil_mode", "ceil_mode=1 (windows hanging off the map) is not built; export with "
                      "ceil_mode=False or pad the input")


def accepted(node, g: GraphView) -> None:
    """No limits beyond the op itself."""


@dataclass(frozen=True)
class Capability:
    """One row of the table. ``emulator``: True when hls4ml 1.3's C simulation of this op is bit-exact
    with the integer model, else the reason it is not used (the integer model stands in)."""

    op: str
    becomes: str
    limits: str
    check: Callable[[onnx.NodeProto, GraphView], None]
    rtl: str
    tests: tuple[str, ...]
    emulator: bool | str = True
    built: bool = True
    extra: dict = field(default_factory=dict)
