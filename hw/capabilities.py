"""What the hardware flow builds, declared once (DESIGN.md, contract 8).

Every ONNX operator the flow accepts has one row here: what it becomes, its limits as checks on
the node, whether hls4ml 1.3's C simulation (the emulator) reproduces it bit for bit, and the
tests that prove it. ``check_onnx`` runs every row's checks on the user's file before any work
and refuses anything outside the table with one line naming the file, the node, the op and the
attribute. The precision search and the RTL generator look their ops up here too
(:func:`capability`), and ``docs/onnx-support.md`` is generated from this table
(``python -m edgefpga.hw.capabilities``; a test keeps the file in step).
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
        self.constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            elif node.input and all(t in self.constants for t in node.input if t):
                self.fold(node)
        self.shapes: dict[str, list[int]] = {}
        for value in (*graph.input, *graph.value_info, *graph.output):
            dims = value.type.tensor_type.shape.dim
            if value.type.tensor_type.HasField("shape"):
                self.shapes[value.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
        self.outputs = {o.name for o in graph.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.producer: dict[str, onnx.NodeProto] = {}
        for node in model.graph.node:
            for t in node.input:
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


def attribute(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ---- checks shared by several rows ---------------------------------------------------------------

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


# ---- the rows' checks ----------------------------------------------------------------------------

def check_conv(node, g: GraphView) -> None:
    weight = g.constant(node, 1, "W (input 1)")
    if weight.ndim != 4:
        raise Refusal("W (input 1)", f"weight of rank {weight.ndim}: only 2-D convolutions are built")
    if len(node.input) > 2 and node.input[2]:
        g.constant(node, 2, "B (input 2)")
    check_spatial(node, list(attribute(node, "kernel_shape", weight.shape[2:])))
    group = attribute(node, "group", 1)
    if group != 1:
        channels = weight.shape[1] * group
        if not (weight.shape[1] == 1 and weight.shape[0] == group == channels):
            raise Refusal("group", f"group={group} with {channels} input and {weight.shape[0]} output channels: only "
                          "group=1 and depthwise (group = input channels = output channels) are built")


def check_batchnorm(node, g: GraphView) -> None:
    for i, name in enumerate(("scale", "B", "mean", "var"), start=1):
        g.constant(node, i, f"{name} (input {i})")
    if attribute(node, "training_mode", 0):
        raise Refusal("training_mode", "export the model in eval mode")


def check_leaky(node, g: GraphView) -> None:
    alpha = attribute(node, "alpha", 0.01)
    if not 0.0 <= alpha < 1.0:
        raise Refusal("alpha", f"{alpha}: a slope in [0, 1) is built")


def clip_bounds(node: onnx.NodeProto, g: GraphView) -> tuple[float, float]:
    """(min, max) of a Clip, attributes (opset < 11) or constant inputs (11+); missing: unbounded."""
    if any(a.name in ("min", "max") for a in node.attribute):
        return float(attribute(node, "min", -np.inf)), float(attribute(node, "max", np.inf))
    bounds = []
    for index, name in ((1, "min"), (2, "max")):
        if index < len(node.input) and node.input[index]:
            bounds.append(float(g.constant(node, index, f"{name} (input {index})").reshape(-1)[0]))
        else:
            bounds.append(-np.inf if name == "min" else np.inf)
    return bounds[0], bounds[1]


def check_clip(node, g: GraphView) -> None:
    low, high = clip_bounds(node, g)
    if low > high:
        raise Refusal("min", f"min {low} is above max {high}")


def is_global_window(node, g: GraphView) -> bool:
    """A pool window over the whole unpadded map (what exporters write for an adaptive pool to 1x1)."""
    shape = g.shapes.get(node.input[0], [])
    kernel = list(attribute(node, "kernel_shape", []))
    return len(shape) == 4 and kernel == shape[2:] and not any(attribute(node, "pads", [0]))


def check_pool_window(node, g: GraphView) -> None:
    if not is_global_window(node, g):
        check_spatial(node, list(attribute(node, "kernel_shape", [])))


def check_maxpool(node, g: GraphView) -> None:
    check_pool_window(node, g)
    check_ceil_mode(node)
    if len(node.output) > 1 and node.output[1]:
        raise Refusal("Indices (output 1)", "the indices output of MaxPool is not built")
    if attribute(node, "storage_order", 0):
        raise Refusal("storage_order", "column-major indices are not built")


def check_avgpool(node, g: GraphView) -> None:
    check_pool_window(node, g)
    check_ceil_mode(node)
    padded = any(attribute(node, "pads", [0])) or text(attribute(node, "auto_pad", "NOTSET")).startswith("SAME")
    if padded and not attribute(node, "count_include_pad", 0):
        raise Refusal("count_include_pad", "a padded average pool that does not count the padding divides border "
                      "windows by other numbers; export with count_include_pad=True (PyTorch's default)")


SPATIAL_AXES = [2, 3]  # of an NCHW map: what a global pool reduces


def reduce_axes(node: onnx.NodeProto, constant: Callable[[str], np.ndarray | None]) -> list[int] | None:
    """The axes of a ReduceMean / ReduceMax as written: the ``axes`` attribute (up to opset 17) or
    the constant second input (opset 18+, the torch.export-based exporter's form); None when the
    node gives none (which means every axis, or none with ``noop_with_empty_axes``)."""
    axes = attribute(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = constant(node.input[1])
        axes = None if value is None else value.reshape(-1).tolist()
    return [int(a) for a in axes] if axes else None


def is_spatial_reduce(axes: list[int] | None, rank: int | None) -> bool:
    """A reduction over exactly the two spatial axes of a 4-D NCHW tensor: a global pool."""
    return rank == 4 and axes is not None and sorted(a % 4 for a in axes) == SPATIAL_AXES


def check_reduce(node, g: GraphView) -> None:
    if len(node.input) > 1 and node.input[1]:
        g.constant(node, 1, "axes (input 1)")
    axes = reduce_axes(node, g.constants.get)
    shape = g.shapes.get(node.input[0])
    what = {"ReduceMean": "mean", "ReduceMax": "maximum"}[node.op_type]
    if axes is None:
        raise Refusal("axes", f"none given (the {what} over every axis, or none): only the {what} over the spatial "
                      "axes (2, 3) of an NCHW map (a global pool) is built")
    if shape is None:
        raise Refusal("data (input 0)", "its shape is unknown; only the reduction of an NCHW map [N, C, H, W] over "
                      "(2, 3) is built")
    if not is_spatial_reduce(axes, len(shape)):
        raise Refusal("axes", f"{axes} of a rank-{len(shape)} tensor: only the {what} over the spatial axes (2, 3) of "
                      "an NCHW map (a global pool) is built")


def check_flatten(node, g: GraphView) -> None:
    if attribute(node, "axis", 1) != 1:
        raise Refusal("axis", f"axis={attribute(node, 'axis')}: only axis=1 (keep the batch) is built")


def check_reshape(node, g: GraphView) -> None:
    target = g.constant(node, 1, "shape (input 1)")
    if node.input[0] in g.constants:
        return  # a reshape of a constant (a weight): folded
    if target.size != 2 or target[0] not in (1, -1, 0):
        raise Refusal("shape (input 1)", f"{target.tolist()}: only flattening to [N, features] is built")


def check_gemm(node, g: GraphView) -> None:
    if attribute(node, "transA", 0):
        raise Refusal("transA", "a transposed input is not built")
    g.constant(node, 1, "B (input 1)")
    if len(node.input) > 2 and node.input[2]:
        g.constant(node, 2, "C (input 2)")


def check_matmul(node, g: GraphView) -> None:
    if node.input[0] in g.constants:
        raise Refusal("A (input 0)", "the data must be the first input, the weights the second")
    weight = g.constant(node, 1, "B (input 1)")
    if weight.ndim != 2:
        raise Refusal("B (input 1)", f"weights of rank {weight.ndim}: a dense layer needs a 2-D matrix")


def check_add(node, g: GraphView) -> None:
    constant = [t in g.constants for t in node.input]
    if any(constant):
        value = g.constants[node.input[constant.index(True)]]
        data = node.input[constant.index(False)] if not all(constant) else None
        channels = g.channels(data) if data else None
        if value.size != 1 and (channels is None or value.size != channels):
            raise Refusal(f"input {constant.index(True)}", f"a constant of shape {list(value.shape)}: only a bias "
                          "(one value per channel) is built")
        return
    a, b = (g.shapes.get(t) for t in node.input[:2])
    if a and b and a != b:
        raise Refusal("inputs", f"shapes {a} and {b}: a residual Add needs two tensors of the same shape "
                      "(broadcasting is not built)")


def check_output_activation(node, g: GraphView) -> None:
    if node.output[0] not in g.outputs:
        raise Refusal("position", f"{node.op_type} is built only as the last node (the accelerator returns the "
                      "scores before it; the runtime applies it)")
    if node.op_type == "Softmax":
        axis = attribute(node, "axis", -1)
        rank = len(g.shapes.get(node.input[0], [1, 1]))
        if axis not in (-1, rank - 1, 1):
            raise Refusal("axis", f"axis={axis}: only a softmax over the classes is built")


def check_concat(node, g: GraphView) -> None:
    raise Refusal("all", "channel concatenation is not built: the streams of its inputs arrive at different "
                  "rates and would need frame-sized buffers; use a residual Add instead")


def accepted(node, g: GraphView) -> None:
    """No limits beyond the op itself."""


# ---- the table -----------------------------------------------------------------------------------

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


CONV_TESTS = ("tests/hw/test_features.py::test_feature_is_bit_exact[convs]",
              "tests/hw/test_features.py::test_feature_is_bit_exact[vgg_rgb]",
              "tests/hw/test_features.py::test_feature_is_bit_exact[post_add_bn]")

DEFAULT_EXPORTER_TESTS = ("tests/hw/test_default_exporter.py::test_default_export_is_bit_exact",
                          "tests/hw/test_default_exporter.py::test_reductions_over_other_axes_are_refused")

QONNX_TESTS = ("tests/hw/test_qonnx.py::test_qonnx_converts_with_its_own_types",
               "tests/hw/test_qonnx.py::test_qonnx_rtl_is_bit_exact",
               "tests/hw/test_qonnx.py::test_scale_not_a_power_of_two_is_refused",
               "tests/hw/test_qonnx.py::test_other_quantizers_are_refused_by_name",
               "tests/hw/test_qonnx.py::test_bipolar_weights_convert_exactly")

CAPABILITIES: tuple[Capability, ...] = (
    Capability("Conv", "a Conv with its bias (BatchNorm and bias Add folded in)",
               f"2-D; kernels and strides of any shape (sides 1..{MAX_KERNEL}, strides 1..{MAX_STRIDE}); symmetric or "
               "asymmetric pads smaller than the kernel, auto_pad; group 1 or depthwise (group = channels); "
               "with or without bias; dilation refused",
               check_conv, "ef_conv2d", CONV_TESTS + ("tests/hw/test_capabilities.py::test_keras_style_padding_is_bit_exact",
                                                      "tests/hw/test_capabilities.py::test_refused_up_front")),
    Capability("BatchNormalization", "folded into the Conv before it; elsewhere a per-channel scale and shift "
               "(also the input normalization)", "constant parameters, eval mode", check_batchnorm, "ef_affine",
               ("tests/hw/test_features.py::test_feature_is_bit_exact[post_add_bn]",)),
    Capability("Relu", "fused into the layer before it (a saturation at zero)", "", accepted, "fused / ef_act",
               CONV_TESTS),
    Capability("LeakyRelu", "a per-channel stage: x, or x times the slope rounded to 16 bits", "alpha in [0, 1)",
               check_leaky, "ef_act", ("tests/hw/test_features.py::test_feature_is_bit_exact[gray_48x80]",
                                       "tests/hw/test_features.py::test_feature_is_bit_exact[post_add_bn]")),
    Capability("Clip", "fused into the layer before it as a saturation (ReLU6 and any bounds)",
               "constant min/max (either may be absent)", check_clip, "fused / ef_act",
               ("tests/hw/test_features.py::test_feature_is_bit_exact[gray_48x80]",),
               emulator="hls4ml 1.3's ONNX reader has no Clip: the integer model stands in"),
    Capability("MaxPool", "a streaming window maximum", "2-D; any window and stride, overlapping windows, padding "
               "(ignored, as ONNX defines); ceil_mode and indices refused", check_maxpool, "ef_pool2d",
               ("tests/hw/test_features.py::test_feature_is_bit_exact[vgg_rgb]",
                "tests/hw/test_features.py::test_feature_is_bit_exact[convs]"),
               emulator="padded, overlapping or skipping windows: hls4ml's streaming pool asserts; the integer model "
                        "stands in"),
    Capability("AveragePool", "a streaming window sum divided exactly by the window size", "2-D; any window and "
               "stride; padding counted (count_include_pad=1); a window over the whole map is a global pool",
               check_avgpool, "ef_pool2d / ef_gpool",
               ("tests/hw/test_features.py::test_feature_is_bit_exact[gray_48x80]",
                "tests/hw/test_features.py::test_feature_is_bit_exact[post_add_bn]"),
               emulator="padded, overlapping or skipping windows: hls4ml's streaming pool asserts; the integer model "
                        "stands in"),
    Capability("GlobalAveragePool", "an average over the whole map (any size), one accumulator per channel", "",
               accepted, "ef_gpool", ("tests/hw/test_features.py::test_feature_is_bit_exact[gray_48x80]",),
               emulator="yes, as an AveragePool over the map (hls4ml 1.3 mis-reads a channels-last global pool)"),
    Capability("GlobalMaxPool", "a maximum over the whole map, one register per channel", "", accepted, "ef_gpool",
               ("tests/hw/test_features.py::test_feature_is_bit_exact[convs]",),
               emulator="yes, as a MaxPool over the map (hls4ml 1.3 mis-reads a channels-last global pool)"),
    Capability("ReduceMean", "a global average pool (what PyTorch's torch.export-based exporter, the default since "
               "2.9, writes for AdaptiveAvgPool2d(1) and x.mean((2, 3)))", "over the spatial axes (2, 3) of an NCHW map "
               "only (axes as attribute or constant input); keepdims 1, or 0 (a Flatten follows)", check_reduce,
               "ef_gpool", DEFAULT_EXPORTER_TESTS,
               emulator="yes, as an AveragePool over the map (hls4ml 1.3 mis-reads a channels-last global pool)"),
    Capability("ReduceMax", "a global max pool (what the default exporter writes for AdaptiveMaxPool2d(1) and "
               "x.amax((2, 3)))", "over the spatial axes (2, 3) of an NCHW map only (axes as attribute or constant "
               "input); keepdims 1, or 0 (a Flatten follows)", check_reduce, "ef_gpool", DEFAULT_EXPORTER_TESTS,
               emulator="yes, as a MaxPool over the map (hls4ml 1.3 mis-reads a channels-last global pool)"),
    Capability("Flatten", "the dense layer reads the map in stream order", "axis=1", check_flatten, "(wiring)",
               ("tests/hw/test_features.py::test_feature_is_bit_exact[vgg_rgb]",)),
    Capability("Reshape", "Flatten, or folded when it reshapes a weight", "to [N, features] only", check_reshape,
               "(wiring)", ("tests/hw/test_capabilities.py::test_onnx_zoo_mnist_is_bit_exact",)),
    Capability("Gemm", "a dense layer (MatMul + bias), alpha, beta and transB folded into the weights",
               "transA=0; constant B and C; with or without bias", check_gemm, "ef_dense",
               ("tests/hw/test_features.py::test_feature_is_bit_exact[vgg_rgb]",)),
    Capability("MatMul", "a dense layer (a zero bias is added when none follows)", "constant 2-D weights",
               check_matmul, "ef_dense", ("tests/hw/test_capabilities.py::test_onnx_zoo_mnist_is_bit_exact",)),
    Capability("Add", "a bias (folded into the Conv or dense layer before it), or a residual join of two branches "
               "with a FIFO on the shorter branch sized from both branches' latency", "a per-channel constant, or two "
               "tensors of the same shape; a branch may not fork again", check_add, "ef_add (+ ef_fork, ef_fifo)",
               ("tests/hw/test_features.py::test_feature_is_bit_exact[post_add_bn]",)),
    Capability("Softmax", "removed: the accelerator returns the scores before it, the runtime applies it",
               "only as the last node", check_output_activation, "(runtime)",
               ("tests/hw/test_features.py::test_feature_is_bit_exact[gray_48x80]",)),
    Capability("Sigmoid", "removed: the accelerator returns the scores before it, the runtime applies it",
               "only as the last node", check_output_activation, "(runtime)",
               ("tests/hw/test_features.py::test_feature_is_bit_exact[post_add_bn]",)),
    Capability("Identity", "removed", "", accepted, "(removed)", ("tests/hw/test_capabilities.py::test_check_accepts",)),
    Capability("Dropout", "removed (inference)", "", accepted, "(removed)",
               ("tests/hw/test_capabilities.py::test_check_accepts",)),
    Capability("Constant", "folded", "", accepted, "(folded)", ("tests/hw/test_capabilities.py::test_check_accepts",)),
    Capability("Quant", "QONNX (Brevitas export_qonnx): on a weight or bias, folded into the layer's integer "
               "weights with the quantizer's width; on an activation, the fixed-point type of that layer's output "
               "(a round-half-even cast with saturation). No precision search runs (hw/qonnx_in.py)",
               "power-of-two scales (Brevitas' *FixedPoint quantizers; others refused naming the node and the scale); "
               "activations: one scale per tensor, zero point 0, rounding_mode ROUND, narrow=0, 1-16 bits; weights: "
               "per-tensor or per-channel scales, any integer zero point", accepted, "(types)", QONNX_TESTS),
    Capability("BipolarQuant", "QONNX: on a weight, folded into +-scale integer weights", "weights only "
               "(power-of-two scale); on an activation refused", accepted, "(types)", QONNX_TESTS),
    Capability("Trunc", "refused", "Brevitas' truncating average pool: use AvgPool2d / AdaptiveAvgPool2d and a "
               "quantizer after it", accepted, "-", QONNX_TESTS, emulator="-", built=False),
    Capability("Concat", "refused", "channel concatenation would need frame-sized buffers between branches",
               check_concat, "-", ("tests/hw/test_capabilities.py::test_refused_up_front",), emulator="-",
               built=False),
)

TABLE = {c.op: c for c in CAPABILITIES}


def capability(op: str) -> Capability:
    """The row of ``op``; a KeyError names the op (an op the table lacks never reaches the generators)."""
    try:
        return TABLE[op]
    except KeyError:
        raise KeyError(f"{op} is not in the capability table (hw/capabilities.py)") from None


def supported_ops() -> list[str]:
    return sorted(c.op for c in CAPABILITIES if c.built)


def check_node(node: onnx.NodeProto, g: GraphView) -> Refusal | None:
    """The reason ``node`` is outside the table, or None."""
    if node.domain not in ("", "ai.onnx"):
        return Refusal("domain", f"operator domain '{node.domain}' is not built (standard ONNX operators only)")
    row = TABLE.get(node.op_type)
    if row is None:
        return Refusal("op", f"operator not built; built: {', '.join(supported_ops())} (docs/onnx-support.md)")
    try:
        row.check(node, g)
    except Refusal as refusal:
        return refusal
    return None


def markdown() -> str:
    """docs/onnx-support.md: the table, as users read it."""
    lines = [
        "# ONNX models the hardware flow builds",
        "",
        "<!-- generated by `python -m edgefpga.hw.capabilities > docs/onnx-support.md` from hw/capabilities.py;",
        "     tests/hw/test_capabilities.py fails when the two differ -->",
        "",
        "`edgefpga convert` first checks every node of the file against this table (`check_onnx`). Anything",
        "outside it is refused before any work: exit status 2, one line naming the file, the node, the op and",
        "the attribute, no build folder left behind. Nothing is dropped silently: an attribute the hardware",
        "cannot honour is refused, not ignored.",
        "",
        "The whole file must also have: one input `[N, C, H, W]` with fixed C, H, W (a symbolic N counts as",
        "one frame), one output, default-domain opset 8 or newer (8-12 upgraded to 13; 18 and newer, as PyTorch's",
        "default torch.export-based exporter writes, read as 13 once canonical), and a graph in which a tensor",
        "feeds at most two nodes, the two branches of a residual block meeting again at an `Add`.",
        "",
        "A quantized model in QONNX form (Brevitas' `export_qonnx`: `Quant` nodes) is read first: its quantizers",
        "become the design's fixed-point types and leave a float graph that this table then checks like any other",
        "(rows `Quant`, `BipolarQuant`, `Trunc` below; docs/convert.md, \"Quantized models\").",
        "",
        "*Emulator*: whether hls4ml 1.3's C simulation of the op is bit-exact with edgefpga's integer model.",
        "Where it is not, the build has no `hls/` project and `verify` uses the integer model (which the RTL",
        "must match bit for bit in every case) and says so in `verify.json` (`emulator.stand_in`).",
        "",
        "| op | becomes | limits | RTL | emulator | proved by |",
        "|---|---|---|---|---|---|",
    ]
    for c in CAPABILITIES:
        emulator = "yes" if c.emulator is True else c.emulator
        tests = "<br>".join(f"`{t}`" for t in c.tests)
        op = c.op if c.built else f"{c.op} (refused)"
        lines.append(f"| `{op}` | {c.becomes} | {c.limits or '-'} | `{c.rtl}` | {emulator} | {tests} |")
    lines += ["", "Any other operator, domain or attribute value is refused with its name.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")


# ---- where hls4ml 1.3's emulator stands in (on the canonical graph) -----------------------------

def emulator_gap(model, node: onnx.NodeProto) -> str | None:
    """Why hls4ml 1.3's C simulation cannot stand for ``node`` of the canonical graph, or None."""
    from .graph import attr

    if node.op_type in ("MaxPool", "AveragePool") and any(attr(node, "pads", [0])):
        return f"{node.name}: padded pooling (hls4ml's pooling C simulation asserts)"
    if node.op_type in ("MaxPool", "AveragePool") and attr(node, "kernel_shape") != attr(node, "strides"):
        return f"{node.name}: pooling windows that overlap or skip (hls4ml's streaming pool asserts window == stride)"
    if node.op_type == "Clip":
        return f"{node.name}: Clip (hls4ml 1.3's ONNX reader has none)"
    return None


def emulator_gaps(model) -> list[str]:
    """Every reason the hls4ml emulator cannot stand for the canonical ``model`` (empty: it can)."""
    return [gap for node in model.graph.node if (gap := emulator_gap(model, node)) is not None]
