"""ef_resize: nearest-neighbour upsampling by integer factors (ONNX ``Resize``, what
``nn.Upsample(scale_factor=k)`` and ``F.interpolate(..., mode="nearest")`` export; FOMO and
segmentation heads use it), its hardware model.

Each input pixel is sent KW times and each input row KH times: a row buffer of W pixels replays
the row KH - 1 times. No lanes and no arithmetic: one output pixel per cycle, H*W*KH*KW cycles
per frame, and the output type is the input's (a copy: no knobs, no rounding).

Which Resize nodes are plain pixel repetition is decided by ONNX's own definition: for each
spatial axis, the output index o maps to input index o // k under the node's
``coordinate_transformation_mode`` and ``nearest_mode`` (:func:`source_indices`, the formulas of
the ONNX operator spec, in exact rational arithmetic). PyTorch's exporters write asymmetric +
floor; half_pixel (and pytorch_half_pixel, half_pixel_symmetric) with either rounding and
asymmetric + round_prefer_floor at factor 2 are repetition too; the rest (align_corners, ceil,
tf_half_pixel_for_nn, which opset 13 dropped, ...) are refused by name. tests/hw/test_resize.py checks every
combination against ONNX Runtime.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import onnx
from onnx import helper
from qonnx.transformation.base import Transformation

from ..precision import pass_through
from .base import Resources, clog2, hls_entries
from .estimate import Model, map_memory, predict
from .rule import Capability, GraphView, Refusal, attribute, text

MODULES = ("ef_resize",)
KINDS = ("resize",)
OPS = ("Resize",)  # of the canonical graph
PASS_THROUGH = ("Resize",)  # copies values: its result has its input's type
MAX_FACTOR = 16  # per axis; the row buffer holds one row whatever the factor, this only bounds the counters

TESTS = ("tests/hw/test_resize.py::test_resize_is_bit_exact",
         "tests/hw/test_resize.py::test_upsampled_skip_map_is_bit_exact",
         "tests/sim/test_rtl_resize.py::test_resize_module_repeats_pixels_and_rows",
         "tests/hw/test_resize.py::test_exports_give_one_canonical_graph",
         "tests/hw/test_resize.py::test_repetition_modes_agree_with_onnxruntime",
         "tests/hw/test_resize.py::test_other_resizes_are_refused")


# ---- the planner (one output pixel per cycle, no lanes) -------------------------------------

def lane_options(layer) -> list[tuple[int, int, int]]:
    return [(1, 1, 1)]


def cycles(layer, ci: int, po: int, kp: int) -> int:
    """One output pixel per cycle: H*KH x W*KW."""
    return layer.out_pixels


def multipliers(layer, ci: int, po: int, kp: int) -> int:
    return 0


def plan_params(layer, widths, use_dsp: bool) -> dict:
    """The size-setting RTL parameters, as ``stage`` writes them (the factors ride in ``kernel``)."""
    return dict(W=layer.in_shape[1], C=layer.channels, XW=widths.xw, KH=layer.kernel[0], KW=layer.kernel[1])


# ---- resources (structure from hw/rtl/ef_resize.v; coefficients fitted on Yosys: sim/calibrate.py) ----

def row_buffer(params: dict):
    """The row buffer (W words of C*XW bits, one synchronous read), or None when KH is 1 (no replay)."""
    if params.get("KH", 2) <= 1:
        return None
    return map_memory(params["W"], params["C"] * params.get("XW", 8), reads=1)


def model(module: str, params: dict) -> Model:
    """The instance as structure: the row buffer, the input pixel register, the choice between
    it and the buffer's read word (when rows replay), the output register, and the counters
    (column, pixel and row repetitions)."""
    bits = params["C"] * params.get("XW", 8)
    kh, kw = params.get("KH", 2), params.get("KW", 2)
    counters = clog2(params["W"]) * (1 + (kh > 1)) + clog2(kw) + clog2(kh)  # column(s) to write and read
    m = Model()
    lb = row_buffer(params)
    if lb is not None:
        m.exact = Resources(bram18=lb.bram18, lutram=lb.lutram, ff=lb.out_ff)
    m.add("lut", "const", 1)
    m.add("lut", "counters", counters)
    m.add("lut", "select", bits * (lb is not None))
    m.add("lut", "mem_mux", lb.mux_bits if lb is not None else 0)
    m.add("ff", "const", 1)
    m.add("ff", "counters", counters)
    m.add("ff", "pixels", 2 * bits)
    return m


def resources(module: str, params: dict) -> Resources:
    """Predicted LUT, LUT RAM, FF, DSP and block RAM of one ef_resize instance with RTL ``params``."""
    return predict(module, model(module, params))


# ---- the ONNX node: factors and what it means -------------------------------------------------

def factors_of(model, node: onnx.NodeProto) -> tuple[int, int]:
    """(kh, kw) of a canonical Resize (its constant scales [1, 1, kh, kw])."""
    scales = model.get_initializer(node.input[2]).reshape(-1)
    return int(scales[2]), int(scales[3])


def source_indices(mode: str, rounding: str, n_in: int, n_out: int, scale: Fraction) -> list[int]:
    """The input index ONNX's Resize (mode nearest) reads for each output index along one axis,
    from the operator's formulas in exact arithmetic (``coordinate_transformation_mode``
    ``mode``, ``nearest_mode`` ``rounding``); refused modes raise KeyError."""
    def original(o: int) -> Fraction:
        half = (o + Fraction(1, 2)) / scale - Fraction(1, 2)
        if mode in ("half_pixel", "half_pixel_symmetric"):  # symmetric: the same where n_out = n_in * scale
            return half
        if mode == "pytorch_half_pixel":
            return half if n_out > 1 else Fraction(0)
        if mode == "asymmetric":
            return o / scale
        if mode == "align_corners":
            return Fraction(0) if n_out == 1 else Fraction(o * (n_in - 1), n_out - 1)
        raise KeyError(mode)

    def nearest(x: Fraction) -> int:
        if rounding == "floor":
            return math.floor(x)
        if rounding == "ceil":
            return math.ceil(x)
        tie = x - math.floor(x) == Fraction(1, 2)
        if rounding == "round_prefer_floor":
            return math.floor(x) if tie else round(x)
        if rounding == "round_prefer_ceil":
            return math.ceil(x) if tie else round(x)
        raise KeyError(rounding)

    return [min(max(nearest(original(o)), 0), n_in - 1) for o in range(n_out)]


def is_repetition(mode: str, rounding: str, n_in: int, k: int) -> bool:
    """Whether the node reads input o // k for every output o along an axis of ``n_in`` pixels."""
    if k == 1:
        return True
    try:
        return source_indices(mode, rounding, n_in, n_in * k, Fraction(k)) == [o // k for o in range(n_in * k)]
    except KeyError:
        return False


def full_rank(values: np.ndarray, axes: list[int] | None, rank: int, fill: float) -> np.ndarray:
    """Scales or sizes given for ``axes`` only (opset 18+) spread over all ``rank`` axes."""
    if axes is None:
        return values
    out = np.full(rank, fill, np.float64)
    for axis, value in zip(axes, values):
        out[axis % rank] = value
    return out


def node_factors(node: onnx.NodeProto, constant, shape: list[int] | None) -> tuple[int, int]:
    """(kh, kw) from the node's constant scales or sizes, or a Refusal naming what is wrong.
    ``constant(name)`` is a tensor's value or None."""
    inputs = list(node.input) + [""] * (4 - len(node.input))
    if inputs[1] and constant(inputs[1]) is not None and constant(inputs[1]).size:
        raise Refusal("roi (input 1)", "a region of interest is not built (plain upsampling of the whole map only)")
    if shape is None or len(shape) != 4 or any(d <= 0 for d in shape):
        raise Refusal("X (input 0)", f"shape {shape}: only an NCHW map [N, C, H, W] of known size is upsampled")
    axes = attribute(node, "axes")
    axes = [int(a) for a in axes] if axes else None
    if inputs[2] and constant(inputs[2]) is not None and constant(inputs[2]).size:
        scales = full_rank(constant(inputs[2]).astype(np.float64).reshape(-1), axes, 4, 1.0)
        what, given = "scales (input 2)", ""
    elif inputs[3]:
        sizes = constant(inputs[3])
        if sizes is None:
            raise Refusal("sizes (input 3)", "must be a constant (a fixed output size)")
        sizes = full_rank(sizes.astype(np.float64).reshape(-1), axes, 4, 0.0)
        sizes = np.where(sizes == 0, shape, sizes) if axes else sizes
        if len(sizes) == 4 and text(attribute(node, "keep_aspect_ratio_policy", "stretch")) != "stretch":
            raise Refusal("keep_aspect_ratio_policy", f"{text(attribute(node, 'keep_aspect_ratio_policy'))}: only "
                          "'stretch' (the sizes as given) is built")
        scales = sizes / np.asarray(shape, np.float64) if len(sizes) == 4 else sizes
        what, given = "sizes (input 3)", f"{sizes.astype(int).tolist()} on a {shape} map, i.e. factors "
    else:
        raise Refusal("scales (input 2)", "must be a constant (neither scales nor sizes given)")
    if len(scales) != 4:
        raise Refusal(what, f"{list(scales)}: only a 4-D map [N, C, H, W] is upsampled")
    values = [float(s) for s in scales]
    if values[0] != 1 or values[1] != 1:
        raise Refusal(what, f"{given}{values}: the batch and channel factors must be 1")
    if any(v != int(v) or not 1 <= v <= MAX_FACTOR for v in values[2:]):
        raise Refusal(what, f"{given}{values}: only integer factors 1..{MAX_FACTOR} on the height and width are built "
                      "(plain pixel repetition; a fractional or shrinking factor is not)")
    return int(values[2]), int(values[3])


def check_resize(node, g: GraphView) -> None:
    """Mode nearest, integer factors on H and W, coordinate and rounding modes that make it plain
    repetition on this map (:func:`is_repetition`)."""
    from ..onnx_check import default_opset

    if default_opset(g.model) < 11:
        raise Refusal("opset", "Resize-10 (scales as input 1, no coordinate_transformation_mode) is not built: "
                      "export at opset 11 or newer")
    mode = text(attribute(node, "mode", "nearest"))
    if mode != "nearest":
        raise Refusal("mode", f"{mode}: only nearest-neighbour upsampling by integer factors is built (a linear or "
                      "cubic resize would need multipliers per pixel)")
    if attribute(node, "antialias", 0):
        raise Refusal("antialias", "1: an antialiasing filter is not built")
    ctm = text(attribute(node, "coordinate_transformation_mode", "half_pixel"))
    rounding = text(attribute(node, "nearest_mode", "round_prefer_floor"))
    if ctm == "tf_crop_and_resize":
        raise Refusal("coordinate_transformation_mode", "tf_crop_and_resize (a crop) is not built")
    shape = g.shapes.get(node.input[0])
    kh, kw = node_factors(node, g.constants.get, shape)
    for axis, k in (("height", kh), ("width", kw)):
        if not is_repetition(ctm, rounding, shape[2 if axis == "height" else 3], k):
            raise Refusal("coordinate_transformation_mode", f"{ctm} with nearest_mode {rounding} at factor {k} on "
                          f"the {axis} does not repeat each pixel {k} times (only modes that do, as asymmetric + "
                          "floor, PyTorch's, or half_pixel + round_prefer_floor, are built)")


class CanonicalResize(Transformation):
    """Every Resize as one form: ``Resize(X, "", scales [1, 1, kh, kw])`` with mode nearest,
    asymmetric coordinates and floor (what the TorchScript exporter writes for nn.Upsample), which
    means the same in opset 13 as in 18-20. The default exporter's spelled-out attributes
    (antialias 0, keep_aspect_ratio_policy stretch, ...) and a sizes input (F.interpolate(size=))
    go; a factor of 1 on both axes is a wire. The capability check has refused every other Resize."""

    def apply(self, model):
        from ..graph import bypass

        for node in model.graph.node:
            if node.op_type != "Resize" or is_canonical(model, node):
                continue
            kh, kw = node_factors(node, model.get_initializer, model.get_tensor_shape(node.input[0]))
            if (kh, kw) == (1, 1):
                del node.input[1:]
                bypass(model, node)
                return model, True
            name = node.name + "_scales"
            model.set_initializer(name, np.asarray([1, 1, kh, kw], np.float32))
            resize = helper.make_node("Resize", [node.input[0], "", name], [node.output[0]], name=node.name,
                                      mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
            model.graph.node.insert(model.get_node_index(node), resize)
            model.graph.node.remove(node)
            return model, True
        return model, False


CANONICAL_ATTRIBUTES = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}


def is_canonical(model, node: onnx.NodeProto) -> bool:
    from ..graph import attr

    scales = model.get_initializer(node.input[2]) if len(node.input) == 3 and not node.input[1] else None
    return (scales is not None and {a.name for a in node.attribute} == set(CANONICAL_ATTRIBUTES)
            and all(attr(node, k) == v for k, v in CANONICAL_ATTRIBUTES.items()))


# ---- the RTL instance ------------------------------------------------------------------------

def stage(model, p, node, inputs, lanes=None):
    """ef_resize: each pixel KW times, each row KH times (a row buffer replays it)."""
    from .stage import Stage

    x = inputs[0]

    kh, kw = factors_of(model, node)
    x_t = p.tensors[node.input[0]]
    params = dict(W=x.w, C=x.channels, XW=x_t.width, KH=kh, KW=kw)
    oy, ox = np.divmod(np.arange(x.h * kh * x.w * kw), x.w * kw)
    need = (oy // kh) * x.w + ox // kw  # the input pixel each output pixel copies
    return Stage(node.name, "ef_resize", params, {}, [], [("out", node.output[0])], x.channels, x_t.width,
                 x.h * kh * x.w * kw, 0, node.name, need)


def layer_plan(model, node):
    """The planner's row of a Resize (no lanes; its cycles are its output pixels)."""
    from ..plan import LayerPlan

    _, c, h, w = model.get_tensor_shape(node.input[0])
    _, _, oh, ow = model.get_tensor_shape(node.output[0])
    return LayerPlan(node.name, "resize", oh, oh * ow, c, c, factors_of(model, node), h * w, op=node.op_type,
                     in_shape=(h, w), out_shape=(oh, ow))


# ---- precision (hw/precision.py) and integer semantics (hw/intmodel.py) --------------------

def knobs(model, node, ranges, is_output: bool) -> list:
    """None: a copy has its input's type (``PASS_THROUGH``)."""
    return []


def derive_types(model, node, p, by_tensor: dict) -> None:
    pass_through(p, node)


def repeat(q: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """The integer semantics: (N, C, H, W) -> (N, C, H*kh, W*kw), each value repeated."""
    return np.repeat(np.repeat(q, kh, axis=2), kw, axis=3)


# ---- hls4ml (hw/hls.py) ----------------------------------------------------------------------

EMULATOR_GAP = ("yes on a square map with equal factors (nnet::resize_nearest); otherwise hls4ml 1.3's ONNX Resize "
                "reads a channels-last map's height and width from swapped axes: the integer model stands in")


def emulator_gap(model, node: onnx.NodeProto) -> str | None:
    """Why hls4ml 1.3 cannot emulate this (canonical) Resize, or None. Its ONNX reader takes a
    channels-last map's height from the width's axis and the width from the height's (and the
    factors likewise), which is right only when both are equal: a square map, kh == kw."""
    _, _, h, w = model.get_tensor_shape(node.input[0])
    kh, kw = factors_of(model, node)
    if h == w and kh == kw:
        return None
    return (f"{node.name}: Resize of a {h}x{w} map by {kh}x{kw} (hls4ml 1.3's ONNX Resize swaps a channels-last map's "
            "height and width: only a square map with equal factors is read right)")


def to_channels_last(model, node: onnx.NodeProto) -> bool:
    """In the channels-last graph for hls4ml (graph.channels_last): qonnx's layout pass has no
    Resize and leaves it between Transpose(0, 3, 1, 2) and the next node. The Resize reads the
    NHWC map instead (scales [1, kh, kw, 1]) and the transpose moves after it, where qonnx's pass
    (run again) cancels or absorbs it. Its optional roi becomes a one-element constant: hls4ml
    1.3's ResizeRemoveConstants removes a constant roi, and finds no shape for an empty name.
    True when the node was moved."""
    from onnx import helper as onnx_helper

    from ..graph import transpose_perm

    before = model.find_producer(node.input[0])
    if transpose_perm(before) != [0, 3, 1, 2]:
        return False
    nhwc, out = before.input[0], node.output[0]
    scales = model.get_initializer(node.input[2]).reshape(-1)
    model.set_initializer(node.input[2], scales[[0, 2, 3, 1]].astype(np.float32))
    model.set_initializer(node.name + "_roi", np.zeros(1, np.float32))
    node.input[0], node.input[1], node.output[0] = nhwc, node.name + "_roi", out + "_nhwc"
    n, c, h, w = model.get_tensor_shape(out)
    model.set_tensor_shape(out + "_nhwc", [n, h, w, c])
    index = model.get_node_index(node)
    model.graph.node.insert(index + 1, onnx_helper.make_node("Transpose", [out + "_nhwc"], [out], perm=[0, 3, 1, 2],
                                                             name=node.name + "_to_nchw"))
    if not model.find_consumers(before.output[0]):
        model.graph.node.remove(before)
    return True


def hls_precision(cl, node, p) -> dict[str, dict[str, str]]:
    """Its own type (the input's) where a project is ever made: hls4ml's Resize copies values."""
    return hls_entries(node, p)


# ---- capability rule (its row of the table in hw/capabilities.py; docs/onnx-support.md) ----

CAPABILITIES: tuple[Capability, ...] = (
    Capability("Resize", "nearest-neighbour upsampling by integer factors (`nn.Upsample(scale_factor=k)`, "
               "`F.interpolate(mode=\"nearest\")`): each pixel sent kw times, each row kh times from a row buffer; "
               "a copy, the input's type", "mode nearest; constant scales [1, 1, kh, kw] or sizes (constant, or "
               "computed from the map's Shape as TorchScript writes F.interpolate(size=)) giving integer "
               f"factors 1..{MAX_FACTOR} (H and W may differ); coordinate_transformation_mode / nearest_mode that "
               "repeat pixels at those factors (asymmetric + floor as PyTorch writes, half_pixel + "
               "round_prefer_floor, ...); linear / cubic, fractional or shrinking factors, a roi, antialias refused",
               check_resize, "ef_resize", TESTS, emulator=EMULATOR_GAP),
)
