"""The residual block's plumbing and join, their hardware models (resources only):
``ef_add`` (the two branches added channel by channel, one rounding cast), ``ef_fork`` (one
stream to two readers) and ``ef_fifo`` (the branch that runs ahead waits here)."""

from __future__ import annotations

import numpy as np

from ..graph import is_residual
from ..onnx_check import ConversionError
from ..precision import fused_result, param_knob, result_knob
from .base import Resources, clog2, divisors, hls_entries
from .estimate import Model, map_memory, predict
from .rule import Capability, GraphView, Refusal, broadcast_refusal, per_channel
from .stage import Stage, StreamInfo, saturation

MODULES = ("ef_add", "ef_fork", "ef_fifo")
OPS = ("Add",)  # of the canonical graph: a residual join, or the bias of the MatMul before it
FUSES_ACTIVATION = True  # ends in a rounding cast: a Relu / Clip after it is its saturation
PACE_SHARE = 0.5  # the share of the interval a residual join may take (channels_per_step)


def model(module: str, params: dict) -> Model:
    m = Model()
    m.add("lut", "const", 1)
    m.add("ff", "const", 1)
    if module == "ef_fork":
        return m
    if module == "ef_fifo":
        bits, depth = params["BITS"], params["DEPTH"]
        mem = map_memory(depth, bits, reads=1)
        m.exact = Resources(lutram=mem.lutram, bram18=mem.bram18, ff=mem.out_ff + (depth * bits if mem.kind == "logic" else 0))
        m.add("lut", "mux", mem.mux_bits)
        m.add("lut", "counters", clog2(depth) + 1)
        m.add("lut", "logic", bits * depth * (mem.kind == "logic"))
        m.add("ff", "counters", clog2(depth) + 1)
        return m
    c, ow = params.get("C", 1), params.get("OW", 8)
    cp = min(c, params.get("CP", c))  # the lane's channels
    steps = c // cp
    aw, bw = params.get("AW_", 8), params.get("BW_", 8)
    widths = [(aw, params.get("ASIGNED", 1), params.get("ALIGN_A", 0)),
              (bw, params.get("BSIGNED", 1), params.get("ALIGN_B", 0))]
    width = max(w + a for w, _, a in widths) + 1
    # the sum's range against the output's: a bound the sum can pass costs a comparison
    top = sum(((1 << (w - 1)) - 1 if sg else (1 << w) - 1) << a for w, sg, a in widths)
    bottom = sum(-(1 << (w - 1)) << a if sg else 0 for w, sg, a in widths)
    m.add("lut", "sum", cp * width)
    m.add("lut", "round", cp * width * (params.get("SHIFT", 0) > 0))
    m.add("lut", "clamp_high", cp * width * (top >> max(0, params.get("SHIFT", 0)) > params.get("OMAX", (1 << ow) - 1)))
    m.add("lut", "clamp_low", cp * width * (bottom < params.get("OMIN", 0)))
    m.add("lut", "out", c * ow)
    # serial (CP < C): the pickers (a STEPS:1 multiplexer per lane bit) and the step counter;
    # registers: the pixel held, the lane's operands and sums, the results gathered, the counter
    m.add("lut", "pick", cp * (aw + bw) * -(-steps // 4) * (steps > 1))  # a LUT6 selects among 4
    m.add("lut", "steps", clog2(steps) * (steps > 1))
    m.add("ff", "out", c * ow)
    sum_bits = max(aw + widths[0][2], bw + widths[1][2]) + 2
    m.add("ff", "serial", ((c + cp) * (aw + bw) + cp * sum_bits + (c - cp) * ow + clog2(steps) + 5) * (steps > 1))
    return m


def resources(module: str, params: dict) -> Resources:
    return predict(module, model(module, params))


# ---- the RTL instance ------------------------------------------------------------------------

def stage(model, p, node, inputs: list[StreamInfo], lanes=None) -> Stage:
    """ef_add: both branches shifted to common fractional bits, one rounding cast."""
    a, b = inputs
    a_t, b_t = p.tensors[node.input[0]], p.tensors[node.input[1]]
    tensor, out_t, omin, omax = saturation(model, p, node)
    frac = max(a_t.frac, b_t.frac, out_t.frac)
    params = dict(C=a.channels, CP=a.channels, AW_=a_t.width, ASIGNED=int(a_t.signed), ALIGN_A=frac - a_t.frac,
                  BW_=b_t.width, BSIGNED=int(b_t.signed), ALIGN_B=frac - b_t.frac,
                  SHIFT=frac - out_t.frac, OW=out_t.width, OMIN=omin, OMAX=omax)
    return Stage(node.name, "ef_add", params, {}, [], [("out", tensor)], a.channels, out_t.width, a.h * a.w, 0,
                 node.name, np.arange(a.h * a.w))


def channels_per_step(channels: int, pixels: int, interval: int) -> int:
    """The fewest channels a cycle (a divisor of ``channels``) that add a frame's ``pixels`` in at
    most a PACE_SHARE of the interval: the join then never sets the pace of the stages around it
    (a conv's output pixels come in bursts), and costs one lane of adders where ``channels`` lanes
    would idle most of the frame."""
    for cp in divisors(channels):
        if pixels * (channels // cp) <= interval * PACE_SHARE:
            return cp
    return channels


def pace(stage: Stage, interval: int) -> None:
    """The join's channels a cycle for the design's interval (hw/rtlgen.py calls it once the plan is made)."""
    c = stage.params["C"]
    cp = channels_per_step(c, stage.steps_per_frame, interval)
    assert c % cp == 0, (c, cp)  # the RTL's C / CP steps a pixel
    stage.params["CP"] = cp
    stage.steps_per_frame *= c // cp


# ---- precision (the knobs the search sets, the types that follow; hw/precision.py) ----------

def dense_of(model, node):
    """The MatMul whose bias this (non-residual) Add is; refused when there is none."""
    matmul = model.find_producer(node.input[0])
    if matmul is None or matmul.op_type != "MatMul":
        raise ConversionError(f"node '{node.name}' (Add): a constant Add must follow a dense layer here")
    return matmul


def knobs(model, node, ranges, is_output: bool) -> list:
    """A residual join's result; a bias Add's bias (the dense layer's ``bias``) and result."""
    if is_residual(model, node):
        return result_knob(model, node, ranges, is_output)
    return [param_knob(model, dense_of(model, node).name, "bias", node.input[1]),
            *result_knob(model, node, ranges, is_output)]


def derive_types(model, node, p, by_tensor: dict) -> None:
    fused_result(model, node, p, by_tensor)


# ---- hls4ml (its configuration and its quirks; hw/hls.py) -----------------------------------

def hls_precision(cl, node, p) -> dict[str, dict[str, str]]:
    """Its own types; a bias Add's constant (hls4ml's ``<node>_param0``) has the dense layer's bias type."""
    entries = hls_entries(node, p)
    if not is_residual(cl, node):
        entries[f"{node.name}_param0"] = {"result": str(p.layers[dense_of(cl, node).name]["bias"])}
    return entries


# ---- capability rule (its rows of the table in hw/capabilities.py; docs/onnx-support.md) ----

def check_add(node, g: GraphView) -> None:
    constant = [t in g.constants for t in node.input]
    if any(constant):
        if all(constant):
            return  # constants only: folded
        index = constant.index(True)
        value, shape = g.constants[node.input[index]], g.shapes.get(node.input[1 - index])
        if per_channel(value, shape) is None:
            raise broadcast_refusal(node, index, value, shape)
        return
    a, b = (g.shapes.get(t) for t in node.input[:2])
    if a and b and a != b:
        raise Refusal("inputs", f"shapes {a} and {b}: a residual Add needs two tensors of the same shape "
                      "(broadcasting is not built)")


CAPABILITIES: tuple[Capability, ...] = (
    Capability("Add", "a bias (folded into the Conv or dense layer before it; at the input, into the input "
               "normalization), or a residual join of two branches with a FIFO on the shorter branch sized from both "
               "branches' latency", "a constant with one value, or one per channel ([C, 1, 1] or [1, C, 1, 1] on a "
               "map, [C] on a dense layer's features; ONNX broadcasting aligns the last axes, so a [C] on a map "
               "varies along the width: refused), or two tensors of the same shape; a branch may not fork again",
               check_add, "ef_add (+ ef_fork, ef_fifo)",
               ("tests/hw/test_features.py::test_feature_is_bit_exact[post_add_bn]",
                "tests/hw/test_habits.py::test_habits_fold_away",
                "tests/hw/test_habits.py::test_constants_broadcast_as_onnx_does")),
)
