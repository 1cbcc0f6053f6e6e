"""What the hardware flow builds, declared once (DESIGN.md, contract 8).

Every ONNX operator the flow accepts has one row in this table: what it becomes, its limits as
checks on the node, whether hls4ml 1.3's C simulation (the emulator) reproduces it bit for bit,
and the tests that prove it. A layer kind's rows and checks live with the rest of its hardware
model (``hw/layers/<kind>.py``: ``CAPABILITIES``); this module holds the rows of the ops that
are wiring (Flatten, Reshape, the removed and refused ops) and assembles the table. ``check_onnx`` runs every row's checks on the user's file before any work
and refuses anything outside the table with one line naming the file, the node, the op and the
attribute. The precision search and the RTL generator look their ops up here too
(:func:`capability`), and ``docs/onnx-support.md`` is generated from this table
(``python -m edgefpga.hw.capabilities``; a test keeps the file in step).
"""

from __future__ import annotations

import numpy as np
import onnx

from .layers import act, add, affine, concat, conv, dense, gpool, pool, resize
from .layers.rule import (Capability, GraphView, Refusal, accepted, attribute,  # noqa: F401  (GraphView: onnx_check)
                          text)

# ---- the rows of the ops that are wiring, not a layer kind ----------------------------------------

def check_flatten(node, g: GraphView) -> None:
    if attribute(node, "axis", 1) != 1:
        raise Refusal("axis", f"axis={attribute(node, 'axis')}: only axis=1 (keep the batch) is built")


def check_reshape(node, g: GraphView) -> None:
    target = g.constant(node, 1, "shape (input 1)")
    if node.input[0] in g.constants:
        return  # a reshape of a constant (a weight): folded
    if target.size != 2 or target[0] not in (1, -1, 0):
        raise Refusal("shape (input 1)", f"{target.tolist()}: only flattening to [N, features] is built")


def check_output_activation(node, g: GraphView) -> None:
    if node.output[0] not in g.outputs:
        raise Refusal("position", f"{node.op_type} is built only as the last node (the accelerator returns the "
                      "scores before it; the runtime applies it)")
    if node.op_type == "Softmax":
        axis = attribute(node, "axis", -1)
        rank = len(g.shapes.get(node.input[0], [1, 1]))
        if axis not in (-1, rank - 1, 1):
            raise Refusal("axis", f"axis={axis}: only a softmax over the classes is built")


PAD_TAKERS = ("Conv", "MaxPool", "AveragePool")


def pad_amounts(node, g: GraphView) -> list[int]:
    """A Pad's [begin N, C, H, W, end N, C, H, W] from its constant input (opset 11+) or attribute
    (opset < 11), with opset 18's ``axes`` spread over all four axes."""
    if len(node.input) > 1 and node.input[1]:
        pads = [int(p) for p in g.constant(node, 1, "pads (input 1)").reshape(-1)]
    else:
        pads = list(attribute(node, "pads", []))
    if len(node.input) > 3 and node.input[3]:
        axes = [int(a) % 4 for a in g.constant(node, 3, "axes (input 3)").reshape(-1)]
        full = [0] * 8
        for i, axis in enumerate(axes):
            full[axis], full[axis + 4] = pads[i], pads[i + len(axes)]
        pads = full
    if len(pads) != 8:
        raise Refusal("pads", f"{pads}: only a pad of a 4-D map [N, C, H, W] is built")
    return pads


def pad_value(node, g: GraphView) -> float:
    if len(node.input) > 2 and node.input[2]:
        return float(g.constant(node, 2, "constant_value (input 2)").reshape(-1)[0])
    return float(attribute(node, "value", 0.0))


def non_negative(tensor: str, g: GraphView) -> bool:
    """A map no value of which is below zero: a ReLU's, a Clip's with min >= 0, or a max pool or
    zero pad of one (a zero pad before a max pool then changes no window's maximum)."""
    from .layers.act import clip_bounds

    node = g.producer.get(tensor)
    if node is None:
        return False
    if node.op_type in ("Relu", "HardSigmoid"):
        return True
    if node.op_type == "Clip":
        return clip_bounds(node, g)[0] >= 0
    if node.op_type == "MaxPool" or (node.op_type == "Pad" and pad_value(node, g) == 0):
        return non_negative(node.input[0], g)
    return False


def check_pad(node, g: GraphView) -> None:
    """nn.ZeroPad2d (or F.pad) before a Conv or pool, folded into that layer's own padding."""
    mode = text(attribute(node, "mode", "constant"))
    if mode != "constant":
        raise Refusal("mode", f"{mode} padding is not built (only zeros, folded into the next layer's padding)")
    pads = pad_amounts(node, g)
    if any(p < 0 for p in pads):
        raise Refusal("pads", f"{pads}: negative pads (cropping) are not built")
    if any(pads[i] for i in (0, 1, 4, 5)):
        raise Refusal("pads", f"{pads}: only the height and width are padded (the batch and channels never)")
    consumers = g.consumers.get(node.output[0], [])
    taker = consumers[0] if len(consumers) == 1 else None
    if taker is None or taker.op_type not in PAD_TAKERS:
        raise Refusal("position", "a Pad is built only folded into the padding of the one Conv, MaxPool or "
                      f"AveragePool it feeds (it feeds {', '.join(c.op_type for c in consumers) or 'nothing'})")
    check_pad_fold(node, taker, pads[2:4] + pads[6:8], pad_value(node, g), g)


def check_pad_fold(node, taker, pads: list[int], value: float, g: GraphView) -> None:
    """Whether the taker's padding, with ``pads`` (top, left, bottom, right) added, computes what
    the Pad and the taker compute."""
    if text(attribute(taker, "auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
        raise Refusal("position", f"a Pad before {taker.op_type} '{taker.name}' with auto_pad SAME is not folded; "
                      "export explicit pads")
    if taker.op_type == "MaxPool":
        if value != 0 and value != -np.inf:
            raise Refusal("constant_value", f"{value}: a max pool folds a pad of zeros or -inf only")
        if value == 0 and not non_negative(node.input[0], g):
            raise Refusal("constant_value", f"zeros before MaxPool '{taker.name}' on a map that can be negative: "
                          "ONNX's MaxPool pads with -inf, so folding would change border maxima (pad after a ReLU, "
                          "or use the pool's own padding)")
    elif value != 0:
        raise Refusal("constant_value", f"{value}: only zeros are folded into a {taker.op_type}'s padding")
    own = list(attribute(taker, "pads", [0, 0, 0, 0]))
    if taker.op_type == "AveragePool" and any(own) and not attribute(taker, "count_include_pad", 0):
        raise Refusal("position", f"zeros before AveragePool '{taker.name}', which pads without counting the padding: "
                      "its border windows would divide by two different counts")
    total = [a + b for a, b in zip(own, pads)]
    kernel = list(attribute(taker, "kernel_shape", []))
    if not kernel and taker.input[1] in g.constants:
        kernel = list(g.constants[taker.input[1]].shape[2:])
    if any(p >= k for p, k in zip(total, kernel * 2)):
        raise Refusal("pads", f"{total}: with {taker.op_type} '{taker.name}''s own padding the pad must stay smaller "
                      f"than its window {kernel} on every side")


def check_transpose(node, g: GraphView) -> None:
    """The NHWC input of a Keras / tf2onnx-style graph, transposed to NCHW: the accelerator takes
    its pixels channels-last anyway, so the transpose is the stream order itself."""
    from .onnx_check import input_transpose

    transpose = input_transpose(g.model)
    if transpose is None or list(transpose.output) != list(node.output):
        raise Refusal("perm", f"{list(attribute(node, 'perm', []))}: a Transpose is built only as the input's "
                      "NHWC -> NCHW ([0, 3, 1, 2]) as the input's one reader, folded into the stream order")


# ---- the table ----------------------------------------------------------------------------------

QONNX_TESTS = ("tests/hw/test_qonnx.py::test_qonnx_converts_with_its_own_types",
               "tests/hw/test_qonnx.py::test_qonnx_rtl_is_bit_exact",
               "tests/hw/test_qonnx.py::test_scale_not_a_power_of_two_is_refused",
               "tests/hw/test_qonnx.py::test_other_quantizers_are_refused_by_name",
               "tests/hw/test_qonnx.py::test_bipolar_weights_convert_exactly")

QDQ_TESTS = ("tests/hw/test_qdq.py::test_qdq_converts_and_matches_onnxruntime",
             "tests/hw/test_qdq.py::test_qdq_rtl_is_bit_exact_and_scores_are_onnxruntimes",
             "tests/hw/test_qdq.py::test_what_is_not_built_is_refused_by_name",
             "tests/hw/test_qdq.py::test_onnx_zoo_mnist_quantized_by_onnxruntime")

FLATTEN: tuple[Capability, ...] = (
    Capability("Flatten", "the dense layer reads the map in stream order", "axis=1", check_flatten, "(wiring)",
               ("tests/hw/test_features.py::test_feature_is_bit_exact[vgg_rgb]",)),
    Capability("Reshape", "Flatten, or folded when it reshapes a weight", "to [N, features] only", check_reshape,
               "(wiring)", ("tests/hw/test_capabilities.py::test_onnx_zoo_mnist_is_bit_exact",)),
)

WIRING: tuple[Capability, ...] = (
    Capability("Softmax", "removed: the accelerator returns the scores before it, the runtime applies it",
               "only as the last node", check_output_activation, "(runtime)",
               ("tests/hw/test_features.py::test_feature_is_bit_exact[gray_48x80]",)),
    Capability("Sigmoid", "removed: the accelerator returns the scores before it, the runtime applies it",
               "only as the last node", check_output_activation, "(runtime)",
               ("tests/hw/test_features.py::test_feature_is_bit_exact[post_add_bn]",)),
    Capability("Pad", "folded into the padding of the Conv, MaxPool or AveragePool it feeds (`nn.ZeroPad2d`, "
               "`F.pad`; its pads computed from constants, ConstantOfShape and all, are constants too)",
               "constant mode, height and width only, zeros (or -inf before MaxPool); before MaxPool only on a map "
               "that cannot be negative (after a ReLU: else refused, ONNX's MaxPool pads with -inf); before "
               "AveragePool the padding counts (count_include_pad=1); the sum smaller than the window",
               check_pad, "(folded)", affine.HABIT_TESTS + ("tests/hw/test_capabilities.py::test_refused_up_front",),
               emulator="before a Conv, yes; a padded pool has no emulator (hls4ml's pooling asserts): the integer "
                        "model stands in"),
    Capability("Transpose", "folded into the stream order: a graph that takes NHWC and transposes it "
               "(Keras / tf2onnx style) streams the same channels-last pixels as an NCHW one",
               "only [0, 3, 1, 2] on the input, as its one reader", check_transpose, "(stream order)",
               affine.HABIT_TESTS),
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
    Capability("QuantizeLinear", "ONNX QDQ (ONNX Runtime's quantize_static): with its DequantizeLinear, the "
               "tensor travels as the integer q - zero point, in units of its scale; the layer before it rounds and "
               "saturates to it with the requantization multiplier s_x * s_w / s_y folded into its weights (each "
               "weight x multiplier rounded to 25 bits, one DSP48E1 product); a pool or ReLU whose output has a scale "
               "of its own gets it as a 1x1 depthwise Conv after it; on the input, the normalization fitted to ONNX "
               "Runtime's own rounding of all 256 pixel values; on the output, the integers q, with scale and zero "
               "point in report.json for the runtime. No precision search runs (hw/qdq_in.py)",
               "int8 / uint8 activations, one scale per tensor; between quantizers only Conv, Gemm / MatMul, residual "
               "Adds and channel Concats of two (a 1x1 depthwise Conv per branch holds its multiplier), pools, ReLU and "
               "reshapes (others and QOperator files refused by name; a final Softmax / Sigmoid left to the runtime); an asymmetric zero point as a "
               "Clip fused into the layer's saturation; ONNX Runtime's output integers but within about 1e-5 of a "
               "rounding tie (the build fails beyond 3 steps or below the agreement bar)", accepted, "(types)",
               QDQ_TESTS, emulator="no: the integer model stands in where the input needs a clamp"),
    Capability("DequantizeLinear", "ONNX QDQ: on a weight or bias (int8, int32), folded into the layer's weights "
               "with its scale (per tensor or per output channel); on an activation, the pair of QuantizeLinear",
               "weights with zero point 0 (int8, symmetric: quantize_static's default); uint8 weights refused",
               accepted, "(types)", QDQ_TESTS, emulator="no: the integer model stands in where the input needs a "
               "clamp"),
)

# in the order docs/onnx-support.md lists them: each layer kind's rows, then the wiring's
CAPABILITIES: tuple[Capability, ...] = (conv.CAPABILITIES + affine.CAPABILITIES + act.CAPABILITIES + pool.CAPABILITIES
                                        + gpool.CAPABILITIES + resize.CAPABILITIES + FLATTEN + dense.CAPABILITIES
                                        + add.CAPABILITIES + concat.CAPABILITIES + WIRING)

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
    if node.op_type != "Constant" and node.output and all(t in g.constants for t in node.output if t):
        return None  # computes on constants only (an exporter's pads or shapes): folded, as conversion folds it
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
        "one frame; or `[N, H, W, C]` transposed to NCHW by its one reader, row `Transpose`), one output,",
        "default-domain opset 8 or newer (8-12 upgraded to 13; 18 and newer, as PyTorch's",
        "default torch.export-based exporter writes, read as 13 once canonical), and a graph in which a tensor",
        "feeds at most two nodes, the two branches of a fork meeting again at an `Add` (a residual block) or a",
        "`Concat` (a fire module).",
        "",
        "A quantized model in QONNX form (Brevitas' `export_qonnx`: `Quant` nodes) is read first: its quantizers",
        "become the design's fixed-point types and leave a float graph that this table then checks like any other",
        "(rows `Quant`, `BipolarQuant`, `Trunc` below; docs/convert.md, \"Quantized models\"). A QDQ model",
        "(ONNX Runtime's `quantize_static`: `QuantizeLinear` / `DequantizeLinear`) likewise, each tensor in",
        "units of its own scale (rows `QuantizeLinear`, `DequantizeLinear`).",
        "",
        "A node that computes on constants only (the shape arithmetic an exporter writes for a pad: `Shape` of a",
        "weight, `ConstantOfShape`, `Concat`, `Slice`, `Cast`, ...) is folded into a constant, whatever its op.",
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
    if node.op_type == "HardSwish":
        return f"{node.name}: HardSwish (hls4ml 1.3's ONNX reader has none)"
    if node.op_type == "Concat":
        return f"{node.name}: Concat (qonnx's channels-last conversion has none)"
    if node.op_type == "Resize":
        return resize.emulator_gap(model, node)
    return None


def emulator_gaps(model) -> list[str]:
    """Every reason the hls4ml emulator cannot stand for the canonical ``model`` (empty: it can)."""
    return [gap for node in model.graph.node if (gap := emulator_gap(model, node)) is not None]
