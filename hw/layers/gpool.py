"""ef_gpool: a global (whole-map) max or average pool, its hardware model.

Lanes: CI channels folded per cycle; in_pixels x (C/CI) cycles per frame. No multipliers (the
average's divider is one constant multiplication shared by the channels).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx

from .base import Resources, clog2, divisors
from .estimate import Model, predict
from .pool import average_model
from .rule import Capability, GraphView, Refusal, accepted, attribute
from .stage import Stage, StreamInfo, Window, average_params, grid_range

MODULES = ("ef_gpool",)
KINDS = ("gpool",)


def lane_options(layer) -> list[tuple[int, int, int]]:
    return [(ci, 1, 1) for ci in divisors(layer.channels)]


def cycles(layer, ci: int, po: int, kp: int) -> int:
    return layer.in_pixels * (layer.channels // ci)


def multipliers(layer, ci: int, po: int, kp: int) -> int:
    return 0


def plan_params(layer, widths, use_dsp: bool) -> dict:
    """The size-setting RTL parameters, as ``stage`` writes them
    (SUMW: the widest sum of an average, in_pixels values of the input type)."""
    h, w = layer.in_shape
    sumw = (layer.in_pixels * (1 << widths.xw)).bit_length() + 1
    return dict(H=h, W=w, C=layer.channels, CI=layer.ci, MODE=int(layer.op == "AveragePool"), XW=widths.xw,
                XSIGNED=int(widths.x_signed), OW=widths.ow, SUMW=sumw)


# ---- resources (structure from hw/rtl/ef_gpool.v; coefficients fitted on Yosys: sim/calibrate.py) ----

def model(module: str, params: dict) -> Model:
    """The instance as structure: a ring of C accumulators folding CI channels per cycle (a
    comparison for max, an adder for average), the latched pixel rotating by CI channels, the
    shared divider of an average, and the output registers."""
    p = params
    c, ci = p["C"], p.get("CI", 1)
    xw, ow = p.get("XW", 8), p.get("OW", p.get("XW", 8))
    m = Model()
    counters = clog2(c // ci) + clog2(p.get("H", 1) * p.get("W", 1) + 1) + clog2(c)
    m.add("lut", "const", 1)
    m.add("lut", "counters", counters)
    m.add("lut", "pixel", c * xw * (c > ci))
    m.add("ff", "const", 1)
    m.add("ff", "counters", counters)
    m.add("ff", "pixel", c * xw)
    m.add("ff", "out", 2 * c * ow)
    if p.get("MODE", 1) == 0:
        m.add("lut", "max", ci * (xw + 1))
        m.add("lut", "ring_max", c * (xw + 1))
        m.add("ff", "max", c * (xw + 1))
    else:
        average_model(m, p, c, ci)
    return m


def resources(module: str, params: dict) -> Resources:
    """Predicted LUT, LUT RAM, FF, DSP and block RAM of one ef_gpool instance with RTL ``params``."""
    return predict(module, model(module, params))


def is_global(node, x: StreamInfo) -> bool:
    """A pool whose window is the whole unpadded map (the canonical graph's global pools): this
    kind builds it, not ef_pool2d."""
    window = Window.of(node)
    return window.kernel == (x.h, x.w) and not any(window.pads)


def stage(model, p, node, inputs: list[StreamInfo], lanes) -> Stage:
    """ef_gpool: a max or average over the whole map (a pool whose window is the map), CI channels
    folded per cycle; its output waits for the frame's last pixel."""
    x = inputs[0]
    x_t = p.tensors[node.input[0]]
    if node.op_type == "MaxPool":
        params, out_t = dict(MODE=0, OW=x_t.width, OMIN=grid_range(x_t)[0], OMAX=grid_range(x_t)[1]), x_t
    else:
        params, out_t = average_params(p, node, x_t, x.h * x.w)
    params = dict(H=x.h, W=x.w, CI=lanes.ci, C=x.channels, XW=x_t.width, XSIGNED=int(x_t.signed), **params)
    return Stage(node.name, "ef_gpool", params, {}, [], [("out", node.output[0])], x.channels, out_t.width,
                 lanes.cycles, 0, node.name, np.array([x.h * x.w - 1]))


# ---- capability rule (its rows of the table in hw/capabilities.py; docs/onnx-support.md) ----

SPATIAL_AXES = [2, 3]  # of an NCHW map: what a global pool reduces

DEFAULT_EXPORTER_TESTS = ("tests/hw/test_default_exporter.py::test_default_export_is_bit_exact",
                          "tests/hw/test_default_exporter.py::test_reductions_over_other_axes_are_refused")

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


CAPABILITIES: tuple[Capability, ...] = (
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
)
