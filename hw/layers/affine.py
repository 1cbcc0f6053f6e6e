"""ef_affine: the per-channel affine map y = x * scale + bias (the input normalization), its
hardware model: resources only (no lanes: one pixel per cycle, all channels at once)."""

from __future__ import annotations

import numpy as np

from ..fixed import type_for_range
from ..precision import CONSTANT_BITS, fused_result, param_range, result_knob
from .base import Resources, hls_entries
from .estimate import Model, predict
from .rule import Capability, GraphView, Refusal, attribute, broadcast_refusal, per_channel
from .stage import Stage, StreamInfo, align, saturation, to_int

MODULES = ("ef_affine",)
OPS = ("BatchNormalization",)  # of the canonical graph (the input normalization folds into one)
FUSES_ACTIVATION = True  # ends in a rounding cast: a Relu / Clip after it is its saturation


def model(module: str, params: dict) -> Model:
    """C multiplications by a constant scale (the ROM is read at constant addresses: it folds
    into the logic), an add of the ACCW-bit bias, the rounding cast and the output register."""
    c, xw, sw, accw, ow = (params.get(k, d) for k, d in (("C", 1), ("XW", 8), ("SW", 16), ("ACCW", 48), ("OW", 8)))
    shift = params.get("SHIFT", 8)
    m = Model()
    m.add("lut", "const", 1)
    m.add("lut", "const_mul", c * (xw + 1) * sw)  # x times a constant: shift-and-add over the scale's bits
    m.add("lut", "sum", c * (xw + sw))
    m.add("lut", "round", c * (xw + sw) * (shift > 0))
    m.add("lut", "out", c * ow)
    m.add("ff", "const", 1)
    m.add("ff", "out", c * ow)
    # Yosys puts some of these products in DSP48s and folds others (a constant scale) into
    # logic, by the constants: a fitted share
    m.add("dsp", "mul", c)
    return m


def resources(module: str, params: dict) -> Resources:
    return predict(module, model(module, params))


# ---- the RTL instance ------------------------------------------------------------------------

def stage(model, p, node, inputs: list[StreamInfo], lanes=None) -> Stage:
    """ef_affine: a BatchNormalization (the input normalization, or any per-channel scale and shift)."""
    x = inputs[0]
    x_t = p.tensors[node.input[0]]
    s_t, b_t = p.layers[node.name]["scale"], p.layers[node.name]["bias"]
    tensor, out_t, omin, omax = saturation(model, p, node)
    scale = to_int(model.get_initializer(node.input[1]), s_t)
    frac = max(x_t.frac + s_t.frac, b_t.frac, out_t.frac)
    bias = align(to_int(model.get_initializer(node.input[2]), b_t), b_t.frac, frac)
    scale = scale << (frac - x_t.frac - s_t.frac)
    sw = max(s_t.width, int(np.abs(scale).max()).bit_length() + 1)
    accw = 48
    words = [format(((int(b) & ((1 << accw) - 1)) << sw) | (int(sc) & ((1 << sw) - 1)), "x")
             for sc, b in zip(scale, bias)]
    params = dict(C=x.channels, XW=x_t.width, XSIGNED=int(x_t.signed), SW=sw, SSIGNED=int(bool((scale < 0).any())),
                  ACCW=accw, SHIFT=frac - out_t.frac, OW=out_t.width, OMIN=omin, OMAX=omax)
    return Stage(node.name, "ef_affine", params, {"AFILE": words}, [], [("out", tensor)], x.channels, out_t.width,
                 x.h * x.w, 0, node.name, np.arange(x.h * x.w))


# ---- precision (the knobs the search sets, the types that follow; hw/precision.py) ----------

def knobs(model, node, ranges, is_output: bool) -> list:
    """The result only: scale and bias are two numbers per channel, not worth searching."""
    return result_knob(model, node, ranges, is_output)


def derive_types(model, node, p, by_tensor: dict) -> None:
    """The fused activation's result type; scale and bias at ``CONSTANT_BITS``."""
    fused_result(model, node, p, by_tensor)
    for key, name in zip(("scale", "bias"), node.input[1:3]):
        signed = bool((model.get_initializer(name) < 0).any())
        t = type_for_range(CONSTANT_BITS, param_range(model, name), signed)
        p.params[name] = t
        p.set_layer(node.name, key, t)


# ---- hls4ml (its configuration and its quirks; hw/hls.py) -----------------------------------

def hls_precision(cl, node, p) -> dict[str, dict[str, str]]:
    return hls_entries(node, p, ("scale", "bias"))


# ---- capability rule (its rows of the table in hw/capabilities.py; docs/onnx-support.md) ----

def check_batchnorm(node, g: GraphView) -> None:
    for i, name in enumerate(("scale", "B", "mean", "var"), start=1):
        g.constant(node, i, f"{name} (input {i})")
    if attribute(node, "training_mode", 0):
        raise Refusal("training_mode", "export the model in eval mode")


INPUT_OPS = ("Sub", "Mul", "Div", "Add")  # constant arithmetic that joins the input normalization
HABIT_TESTS = ("tests/hw/test_habits.py::test_habits_fold_away",
               "tests/hw/test_habits.py::test_habits_are_bit_exact",
               "tests/hw/test_habits.py::test_habits_outside_the_fold_are_refused")


def input_tensors(g: GraphView) -> set[str]:
    """The graph input and what only constant arithmetic (or the NHWC transpose) has made of it:
    the tensors torchvision's ``(x - mean) / std`` inside ``forward`` reads and writes."""
    frontier = {i.name for i in g.model.graph.input if i.name not in g.constants}
    found = set(frontier)
    while frontier:
        tensor = frontier.pop()
        for node in g.consumers.get(tensor, []):
            if node.op_type == "Transpose" or (node.op_type in INPUT_OPS and any(t in g.constants for t in node.input)):
                found.update(node.output)
                frontier.update(node.output)
    return found


def check_input_arithmetic(node, g: GraphView) -> None:
    """Sub / Mul / Div by a per-channel constant, at the input only: an affine map folded into the
    input normalization (one ef_affine stage, the card's own scale, mean and std included)."""
    constant = [t in g.constants for t in node.input[:2]]
    if node.op_type == "Mul" and not any(constant):
        from .act import check_hardswish_mul, hardswish_gate

        if hardswish_gate(node, g) is not None:
            return check_hardswish_mul(node, g)
    if not any(constant):
        raise Refusal("inputs", f"{node.op_type} of two computed tensors is not built (only a constant "
                      "normalization at the input)")
    data = node.input[constant.index(False)]
    if data not in input_tensors(g):
        raise Refusal("position", f"{node.op_type} by a constant is folded only at the input (into the input "
                      "normalization); elsewhere it is not built")
    value = g.constants[node.input[constant.index(True)]]
    if per_channel(value, g.shapes.get(data)) is None:
        raise broadcast_refusal(node, constant.index(True), value, g.shapes.get(data))
    if node.op_type == "Div" and constant[0]:
        raise Refusal("input 0", "a constant divided by the image is no affine map; only image / constant is built")
    if node.op_type == "Div" and not np.all(value):
        raise Refusal("input 1", "a division by zero")


INPUT_ROW = ("folded into the input normalization (torchvision's `(x - mean) / std`, Keras' `Rescaling`, "
             "inside `forward`): one per-channel scale and shift with the card's")
INPUT_LIMITS = ("a constant with one value or one per channel ([C, 1, 1] or [1, C, 1, 1]; a [C] varies along the "
                "width under ONNX broadcasting: refused), on the input (or what such ops made of it)")

CAPABILITIES: tuple[Capability, ...] = (
    Capability("Sub", INPUT_ROW, INPUT_LIMITS + "; constant - image too", check_input_arithmetic, "ef_affine",
               HABIT_TESTS),
    Capability("Mul", INPUT_ROW + "; `x * HardSigmoid(x)` becomes a HardSwish", INPUT_LIMITS, check_input_arithmetic,
               "ef_affine / ef_act", HABIT_TESTS + ("tests/hw/test_hardswish.py::test_hardswish_is_bit_exact",)),
    Capability("Div", INPUT_ROW, INPUT_LIMITS + "; image / constant only, no zero", check_input_arithmetic,
               "ef_affine", HABIT_TESTS),
    Capability("BatchNormalization", "folded into the Conv before it; elsewhere a per-channel scale and shift "
               "(also the input normalization)", "constant parameters, eval mode", check_batchnorm, "ef_affine",
               ("tests/hw/test_features.py::test_feature_is_bit_exact[post_add_bn]",)),
)
