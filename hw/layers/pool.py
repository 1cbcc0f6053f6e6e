"""ef_pool2d: a windowed max or average pool, its hardware model.

No lanes: one window position per cycle, out_pixels x KH x KW cycles per frame, all channels at once.
"""

from __future__ import annotations

import numpy as np

from ..fixed import FixedType
from ..graph import attr
from ..precision import pass_through, result_knob
from .base import Resources, clog2, hls_entries
from .estimate import Model, dsp_per_product, map_memory, predict
from .rule import Capability, GraphView, Refusal, attribute, check_ceil_mode, check_spatial, text
from .stage import (Stage, StreamInfo, Window, average_params, frame_overlap, grid_range, line_buffer_rows,
                    overlap_registers, position_bits, window_geometry, window_need, window_params)

MODULES = ("ef_pool2d",)
KINDS = ("fixed",)
OPS = ("MaxPool", "AveragePool")  # of the canonical graph (global pools are windows over the whole map)
PASS_THROUGH = ("MaxPool",)  # selects values: its result has its input's type


def lane_options(layer) -> list[tuple[int, int, int]]:
    return [(1, 1, 1)]


def cycles(layer, ci: int, po: int, kp: int) -> int:
    return layer.out_pixels * layer.kernel[0] * layer.kernel[1]


def multipliers(layer, ci: int, po: int, kp: int) -> int:
    return 0


def plan_params(layer, widths, use_dsp: bool) -> dict:
    """The size-setting RTL parameters, as ``stage`` writes them."""
    (h, w), (oh, ow) = layer.in_shape, layer.out_shape
    sumw = (layer.kernel[0] * layer.kernel[1] * (1 << widths.xw)).bit_length() + 1
    return dict(H=h, W=w, C=layer.channels, KH=layer.kernel[0], KW=layer.kernel[1], SH=layer.stride[0],
                SW=layer.stride[1], PT=layer.pads[0], PL=layer.pads[1], OH=oh, OWD=ow,
                MODE=int(layer.op == "AveragePool"), XW=widths.xw, XSIGNED=int(widths.x_signed), OW=widths.ow,
                SUMW=sumw, FRAME_OVERLAP=frame_overlap(h, oh, layer.stride[0]))


# ---- resources (structure from hw/rtl/ef_pool2d.v; coefficients fitted on Yosys: sim/calibrate.py) ----

def divider_bits(params: dict) -> tuple[int, int]:
    """(operand, constant) widths, with sign, of an average's divider (ef_average.vh): the sum's
    magnitude (SUMW - 1 bits) times DIV_M (Yosys moves the ALIGN shift past the product); 0 for
    the constant when the count is a power of two (a shift, no product). Without DIV_M (the
    planner's parameters) its width is stage.exact_divider's: the shifted sum's plus one."""
    sumw = params.get("SUMW", params.get("XW", 8) + 4)
    if "KH" in params:
        count = params.get("KH", 1) * params.get("KW", 1)
    else:
        count = params.get("H", 1) * params.get("W", 1)
    if "DIV_M" in params:
        div_m = params["DIV_M"]
        if div_m & (div_m - 1) == 0:
            return sumw, 0
        return sumw, div_m.bit_length() + 1
    if count & (count - 1) == 0:
        return sumw, 0
    return sumw, sumw + params.get("ALIGN", 8) + 1


def average_model(m: Model, params: dict, c: int, ci: int) -> None:
    """The shared divider (a constant multiplication), its rounding cast, and per-channel sums."""
    sumw, ow = params.get("SUMW", 16), params.get("OW", 8)
    a, b = divider_bits(params)
    m.exact = m.exact + Resources(dsp=dsp_per_product(a, b) if b else 0)
    m.add("lut", "divider", (a + b) * (b > 0))
    m.add("lut", "sum", ci * sumw)
    m.add("lut", "ring", c * sumw)
    m.add("ff", "acc", c * sumw)
    m.add("ff", "divided", c * ow)


def model(module: str, params: dict) -> Model:
    """The instance as structure: the line buffer (R rows x 2**clog2(W) columns of C*XW bits, one
    read port), per channel a comparison (max) or an adder (average) into an accumulator, the
    shared divider of an average, and the output registers."""
    p = params
    c, w, kh, kw, sh = p["C"], p["W"], p.get("KH", 2), p.get("KW", 2), p.get("SH", 2)
    xw, ow = p.get("XW", 8), p.get("OW", p.get("XW", 8))
    lb = map_memory(line_buffer_rows(kh, sh) * (1 << max(1, clog2(w))), c * xw, reads=1)
    m = Model()
    m.exact = Resources(bram18=lb.bram18, lutram=lb.lutram, ff=lb.out_ff)
    counters = 2 * clog2(max(kh, kw) + 1) + clog2(c)
    m.add("lut", "const", 1)
    m.add("lut", "counters", counters)
    m.add("lut", "mem_mux", lb.mux_bits)
    m.add("ff", "const", 1)
    m.add("ff", "counters", counters)
    m.add("ff", "out", c * ow)
    m.add("ff", "row_bounds", 2 * position_bits(p))  # row0 + R and row0 + R - 1: where the input may write
    m.add("ff", "overlap", overlap_registers(p))  # FRAME_OVERLAP: the ahead flag, its row bounds, row slots
    if p.get("MODE", 0) == 0:
        m.add("lut", "max", c * (xw + 1))
        m.add("ff", "max", c * (xw + 1))
    else:
        average_model(m, p, c, c)
    return m


def resources(module: str, params: dict) -> Resources:
    """Predicted LUT, LUT RAM, FF, DSP and block RAM of one ef_pool2d instance with RTL ``params``."""
    return predict(module, model(module, params))


def layer_plan(model, node):
    """The planner's row of a pool: ``gpool`` (a window over the whole unpadded map, which takes
    lanes) or ``fixed`` (one window position per cycle)."""
    from ..plan import LayerPlan

    _, c, h, w = model.get_tensor_shape(node.input[0])
    _, _, oh, ow = model.get_tensor_shape(node.output[0])
    kernel = tuple(attr(node, "kernel_shape"))
    kind = "gpool" if kernel == (h, w) and not any(attr(node, "pads", [0])) else "fixed"
    return LayerPlan(node.name, kind, oh, oh * ow, c, c, in_pixels=h * w, op=node.op_type, in_shape=(h, w),
                     out_shape=(oh, ow), **window_geometry(node, kernel))


def stage(model, p, node, inputs: list[StreamInfo], lanes=None) -> Stage:
    """ef_pool2d: a max or average over each window (an average divides exactly, ef_average.vh);
    no lanes (one window position per cycle). A window over the whole map is gpool's kind."""
    from . import gpool  # builds on this module's average model

    x = inputs[0]
    if gpool.is_global(node, x):
        return gpool.stage(model, p, node, inputs, lanes)
    x_t = p.tensors[node.input[0]]
    window = Window.of(node)
    count = window.kernel[0] * window.kernel[1]
    if node.op_type == "MaxPool":
        params, out_t = dict(MODE=0, OW=x_t.width, OMIN=grid_range(x_t)[0], OMAX=grid_range(x_t)[1]), x_t
    else:
        params, out_t = average_params(p, node, x_t, count)
    params = dict(window_params(window, x.h, x.w), C=x.channels, XW=x_t.width, XSIGNED=int(x_t.signed), **params)
    oh, ow = window.output_size(x.h, x.w)
    return Stage(node.name, "ef_pool2d", params, {}, [], [("out", node.output[0])], x.channels, out_t.width,
                 oh * ow * count, 0, node.name, window_need(window, x.h, x.w))


# ---- precision (the knobs the search sets, the types that follow; hw/precision.py) ----------

def knobs(model, node, ranges, is_output: bool) -> list:
    """An average's result; a maximum has its input's type (``PASS_THROUGH``)."""
    return [] if node.op_type in PASS_THROUGH else result_knob(model, node, ranges, is_output)


def derive_types(model, node, p, by_tensor: dict) -> None:
    """A maximum passes its input type through; an average sums exactly into an accumulator
    with room for the window's count and 8 more fractional bits."""
    if node.op_type in PASS_THROUGH:
        pass_through(p, node)
        return
    src = p.tensors[node.input[0]]
    count = int(np.prod(attr(node, "kernel_shape")))
    integer = src.integer + max(8, count.bit_length())
    p.set_layer(node.name, "accum", FixedType(integer + src.frac + 8, integer, src.signed))


# ---- hls4ml (its configuration and its quirks; hw/hls.py) -----------------------------------

def hls_precision(cl, node, p) -> dict[str, dict[str, str]]:
    return hls_entries(node, p)


# ---- capability rule (its rows of the table in hw/capabilities.py; docs/onnx-support.md) ----

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


CAPABILITIES: tuple[Capability, ...] = (
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
)
