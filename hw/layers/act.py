"""ef_act: an activation that could not be fused into the layer before it (ReLU / Clip, or
LeakyReLU), its hardware model: resources only (one pixel per cycle, all channels at once)."""

from __future__ import annotations

import numpy as np
import onnx

from ..fixed import type_for_range
from ..graph import attr
from ..precision import CONSTANT_BITS, result_knob
from .base import Resources, hls_entries
from .conv import CONV_TESTS
from .estimate import Model, predict
from .rule import Capability, GraphView, Refusal, accepted, attribute
from .stage import Stage, StreamInfo, clip_limits, grid_range, to_int

MODULES = ("ef_act",)
OPS = ("Relu", "Clip", "LeakyRelu")  # of the canonical graph
FUSED = ("Relu", "Clip")  # become the saturation of the layer before them (its FUSES_ACTIVATION)


def model(module: str, params: dict) -> Model:
    """Per channel: the clip (two comparisons) or the constant slope (shift-and-add over its one
    bits), the rounding cast and the output register."""
    c, xw, ow = params.get("C", 1), params.get("XW", 8), params.get("OW", 8)
    leaky = params.get("MODE", 0) == 1
    ones = bin(params.get("ALPHA", 0)).count("1") if leaky else 0
    width = xw + (params.get("AF", 0) if leaky else 0)
    # a clip's output never needs more bits than its input (the rest are constant, and go)
    out_bits = ow if leaky else max(1, min(ow, xw + params.get("AF", 0) - params.get("SHIFT", 0)))
    m = Model()
    m.add("lut", "const", 1)
    m.add("lut", "clip", c * xw * (not leaky))
    m.add("lut", "slope", c * (xw + params.get("AWID", 1)) * max(0, ones - 1))
    m.add("lut", "leaky", c * width * leaky)
    m.add("lut", "round", c * width * (params.get("SHIFT", 0) > 0))
    m.add("lut", "out", c * out_bits)
    m.add("ff", "const", 1)
    m.add("ff", "out", c * out_bits)
    return m


def resources(module: str, params: dict) -> Resources:
    return predict(module, model(module, params))


# ---- the RTL instance ------------------------------------------------------------------------

def stage(model, p, node, x: StreamInfo) -> Stage:
    """ef_act: a LeakyRelu, or a Relu / Clip with nothing before it to fuse into."""
    x_t, out_t = p.tensors[node.input[0]], p.tensors[node.output[0]]
    omin, omax = grid_range(out_t)
    if node.op_type == "LeakyRelu":
        a_t = p.layers[node.name]["alpha"]
        alpha = int(to_int(np.float64(attr(node, "alpha", 0.01)), a_t))
        params = dict(MODE=1, AF=a_t.frac, ALPHA=alpha, AWID=max(1, alpha.bit_length()),
                      SHIFT=x_t.frac + a_t.frac - out_t.frac)
    else:
        lo, hi = (0, 1 << 62) if node.op_type == "Relu" else clip_limits(model, node, x_t.frac)
        params = dict(MODE=0, AF=max(0, out_t.frac - x_t.frac), SHIFT=max(0, x_t.frac - out_t.frac),
                      CLO=max(lo, -(1 << 62)), CHI=min(hi, 1 << 62))
    params.update(C=x.channels, XW=x_t.width, XSIGNED=int(x_t.signed), OW=out_t.width, OMIN=omin, OMAX=omax)
    return Stage(node.name, "ef_act", params, {}, [], [("out", node.output[0])], x.channels, out_t.width,
                 x.h * x.w, 0, node.name, np.arange(x.h * x.w))


# ---- precision (the knobs the search sets, the types that follow; hw/precision.py) ----------

def knobs(model, node, ranges, is_output: bool) -> list:
    return result_knob(model, node, ranges, is_output)


def derive_types(model, node, p, by_tensor: dict) -> None:
    """A LeakyRelu's slope at ``CONSTANT_BITS`` (at least 2^-8, so a tiny slope is not zero)."""
    if node.op_type == "LeakyRelu":
        p.set_layer(node.name, "alpha", type_for_range(CONSTANT_BITS, max(attr(node, "alpha", 0.01), 2.0 ** -8), False))


# ---- hls4ml (its configuration and its quirks; hw/hls.py) -----------------------------------

HLS_NAMES = {"alpha": "param"}  # our field name -> hls4ml's (LeakyReLU's slope type is its "param")


def hls_precision(cl, node, p) -> dict[str, dict[str, str]]:
    return hls_entries(node, p, names=HLS_NAMES)


# ---- capability rule (its rows of the table in hw/capabilities.py; docs/onnx-support.md) ----

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


CAPABILITIES: tuple[Capability, ...] = (
    Capability("Relu", "fused into the layer before it (a saturation at zero)", "", accepted, "fused / ef_act",
               CONV_TESTS),
    Capability("LeakyRelu", "a per-channel stage: x, or x times the slope rounded to 16 bits", "alpha in [0, 1)",
               check_leaky, "ef_act", ("tests/hw/test_features.py::test_feature_is_bit_exact[gray_48x80]",
                                       "tests/hw/test_features.py::test_feature_is_bit_exact[post_add_bn]")),
    Capability("Clip", "fused into the layer before it as a saturation (ReLU6 and any bounds)",
               "constant min/max (either may be absent)", check_clip, "fused / ef_act",
               ("tests/hw/test_features.py::test_feature_is_bit_exact[gray_48x80]",),
               emulator="hls4ml 1.3's ONNX reader has no Clip: the integer model stands in"),
)
