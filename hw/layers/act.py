"""ef_act: an activation that could not be fused into the layer before it (ReLU / Clip), or
LeakyReLU, or HardSwish, its hardware model: resources only (one pixel per cycle, all channels
at once)."""

from __future__ import annotations

import numpy as np
import onnx

from ..fixed import type_for_range
from ..graph import attr
from ..precision import CONSTANT_BITS, result_knob
from .base import Resources, hls_entries
from .conv import CONV_TESTS
from .estimate import Model, dsp_per_product, predict
from .rule import Capability, GraphView, Refusal, accepted, attribute
from .stage import Stage, StreamInfo, clip_limits, grid_range, to_int

MODULES = ("ef_act",)
OPS = ("Relu", "Clip", "LeakyRelu", "HardSwish")  # of the canonical graph
FUSED = ("Relu", "Clip")  # become the saturation of the layer before them (its FUSES_ACTIVATION)


def model(module: str, params: dict) -> Model:
    """Per channel: the clip (two comparisons) or the constant slope (shift-and-add over its one
    bits), the rounding cast and the output register. HardSwish (MODE 2): the gate x + 3 clipped
    to [0, 6] (an add and two comparisons), x times the gate (one DSP48 product: both vary), the
    product times the constant 1/6 (shift-and-add over its one bits), the rounding cast."""
    c, xw, ow = params.get("C", 1), params.get("XW", 8), params.get("OW", 8)
    mode = params.get("MODE", 0)
    leaky, hswish = mode == 1, mode == 2
    ones = bin(params.get("ALPHA", 0)).count("1") if mode else 0
    xa = xw + 1 + params.get("XSH", 0)  # x on the gate's grid, with its sign
    gate = params.get("XF", 0) + 4  # 0 .. 6 on that grid, with a sign bit
    product = xa + gate
    width = product + params.get("AWID", 1) if hswish else xw + (params.get("AF", 0) if leaky else 0)
    # a clip's output never needs more bits than its input (the rest are constant, and go)
    out_bits = ow if mode else max(1, min(ow, xw + params.get("AF", 0) - params.get("SHIFT", 0)))
    m = Model()
    if hswish:
        m.exact = Resources(dsp=c * dsp_per_product(xa, gate))
    m.add("lut", "const", 1)
    m.add("lut", "clip", c * xw * (mode == 0))
    m.add("lut", "slope", c * (xw + params.get("AWID", 1)) * max(0, ones - 1) * leaky)
    m.add("lut", "leaky", c * width * leaky)
    m.add("lut", "gate", c * xa * hswish)
    m.add("lut", "sixth", c * (product + params.get("AWID", 1)) * max(0, ones - 1) * hswish)
    m.add("lut", "round", c * width * (params.get("SHIFT", 0) > 0))
    m.add("lut", "out", c * out_bits)
    m.add("ff", "const", 1)
    m.add("ff", "out", c * out_bits)
    return m


def resources(module: str, params: dict) -> Resources:
    return predict(module, model(module, params))


# ---- the RTL instance ------------------------------------------------------------------------

def clip_params(lo: int, hi: int, x_t) -> dict:
    """CLO, CHI: the clip's bounds on the input's grid, drawn in to the input's own range where
    they lie beyond it (the same clip: a bound no input reaches clips nothing). Verilator
    mis-compares a parameter given as an unsized decimal wider than 32 bits (a ReLU's open bound,
    2^62, made every output 0), so the bounds must stay small."""
    xlo, xhi = grid_range(x_t)
    return dict(CLO=min(max(lo, xlo), hi), CHI=max(min(hi, xhi), lo))


def stage(model, p, node, inputs: list[StreamInfo], lanes=None) -> Stage:
    """ef_act: a LeakyRelu, a HardSwish, or a Relu / Clip with nothing before it to fuse into."""
    x = inputs[0]
    x_t, out_t = p.tensors[node.input[0]], p.tensors[node.output[0]]
    omin, omax = grid_range(out_t)
    if node.op_type == "LeakyRelu":
        a_t = p.layers[node.name]["alpha"]
        alpha = int(to_int(np.float64(attr(node, "alpha", 0.01)), a_t))
        params = dict(MODE=1, AF=a_t.frac, ALPHA=alpha, AWID=max(1, alpha.bit_length()),
                      SHIFT=x_t.frac + a_t.frac - out_t.frac)
    elif node.op_type == "HardSwish":
        k_t = p.layers[node.name]["sixth"]
        sixth = int(to_int(np.float64(1.0 / 6.0), k_t))
        grid = max(x_t.frac, 0)  # as intmodel.hardswish: 3 and 6 are integers on this grid
        params = dict(MODE=2, AF=k_t.frac, ALPHA=sixth, AWID=max(1, sixth.bit_length()), XSH=grid - x_t.frac,
                      XF=grid, SHIFT=2 * grid + k_t.frac - out_t.frac)
    else:
        lo, hi = (0, 1 << 62) if node.op_type == "Relu" else clip_limits(model, node, x_t.frac)
        params = dict(MODE=0, AF=max(0, out_t.frac - x_t.frac), SHIFT=max(0, x_t.frac - out_t.frac),
                      **clip_params(lo, hi, x_t))
    params.update(C=x.channels, XW=x_t.width, XSIGNED=int(x_t.signed), OW=out_t.width, OMIN=omin, OMAX=omax)
    return Stage(node.name, "ef_act", params, {}, [], [("out", node.output[0])], x.channels, out_t.width,
                 x.h * x.w, 0, node.name, np.arange(x.h * x.w))


# ---- precision (the knobs the search sets, the types that follow; hw/precision.py) ----------

def knobs(model, node, ranges, is_output: bool) -> list:
    return result_knob(model, node, ranges, is_output)


def derive_types(model, node, p, by_tensor: dict) -> None:
    """A LeakyRelu's slope at ``CONSTANT_BITS`` (at least 2^-8, so a tiny slope is not zero); a
    HardSwish's constant 1/6 at ``CONSTANT_BITS`` too (18 fractional bits: 43691 * 2^-18 = 1/6 + 2^-18 / 3)."""
    if node.op_type == "LeakyRelu":
        p.set_layer(node.name, "alpha", type_for_range(CONSTANT_BITS, max(attr(node, "alpha", 0.01), 2.0 ** -8), False))
    if node.op_type == "HardSwish":
        p.set_layer(node.name, "sixth", type_for_range(CONSTANT_BITS, 1.0 / 6.0, False))


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


def check_hardsigmoid(node, g: GraphView) -> None:
    for name, default in (("alpha", 0.2), ("beta", 0.5)):
        value = attribute(node, name, default)
        if not np.isfinite(value):
            raise Refusal(name, f"{value}: a finite {name} is built")


def hardswish_gate(node, g: GraphView) -> onnx.NodeProto | None:
    """The HardSigmoid of a Mul(x, HardSigmoid(x)) (either order), or None: TorchScript's opset-13
    HardSwish, which the canonical graph makes one HardSwish (hw/graph.py)."""
    for index, tensor in enumerate(node.input[:2]):
        gate = g.producer.get(tensor)
        if gate is not None and gate.op_type == "HardSigmoid" and gate.input[0] == node.input[1 - index]:
            return gate
    return None


def check_hardswish_mul(node, g: GraphView) -> None:
    """Mul(x, HardSigmoid(x)): HardSwish when the gate is nn.Hardswish's (alpha 1/6, beta 1/2)
    and feeds only this Mul."""
    from ..graph import is_hardswish_gate

    gate = hardswish_gate(node, g)
    alpha, beta = attribute(gate, "alpha", 0.2), attribute(gate, "beta", 0.5)
    if not is_hardswish_gate(alpha, beta):
        raise Refusal("inputs", f"x * HardSigmoid(x) is built only as HardSwish (alpha 1/6, beta 0.5); this gate "
                      f"has alpha {alpha:.6g}, beta {beta:.6g}")
    if len(g.consumers.get(gate.output[0], [])) != 1 or gate.output[0] in g.outputs:
        raise Refusal("inputs", f"x * HardSigmoid(x) is built as HardSwish only when the HardSigmoid "
                      f"'{gate.name}' feeds nothing else")


HARDSWISH_TESTS = ("tests/hw/test_hardswish.py::test_hardswish_is_bit_exact",
                   "tests/hw/test_hardswish.py::test_exports_give_one_canonical_graph")

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
    Capability("HardSwish", "a per-channel stage: x * clip(x + 3, 0, 6) exactly, times 1/6 rounded to 16 bits, "
               "one rounding cast (also TorchScript's opset-13 `x * HardSigmoid(x)`)", "", accepted, "ef_act",
               HARDSWISH_TESTS, emulator="hls4ml 1.3's ONNX reader has no HardSwish: the integer model stands in"),
    Capability("HardSigmoid", "a per-channel affine map (alpha x + beta, folded into the Conv before it) and a "
               "saturation to [0, 1]", "finite alpha and beta; in `x * HardSigmoid(x)` alpha 1/6, beta 1/2",
               check_hardsigmoid, "fused / ef_affine",
               HARDSWISH_TESTS + ("tests/hw/test_hardswish.py::test_other_gates_are_refused",),
               emulator="becomes a Clip: the integer model stands in"),
)
