"""ef_dense: a fully connected layer reading the (flattened) map as a pixel stream, its hardware model.

Lanes: CI input channels x PO outputs per cycle; NPIX x (OC/PO) x (C/CI) steps per frame.
Its multipliers are always DSP48s (the module has no LUT-multiplier variant).
"""

from __future__ import annotations

import numpy as np

from ..precision import exact_accumulator, param_knob, sole_consumer
from .base import Resources, clog2, divisors, hls_entries
from .estimate import Model, dsp_per_product, map_memory, predict, rom_columns, rom_luts_per_bit
from .rule import Capability, GraphView, Refusal, attribute
from .stage import Stage, StreamInfo, align, aligned_weights, hex_word, saturation, to_int

MODULES = ("ef_dense",)
KINDS = ("dense",)
OPS = ("MatMul",)  # of the canonical graph; its bias is the Add after it (hw/layers/add.py)
LUT_MULTIPLIERS = False  # ef_dense has no USE_DSP parameter


def lane_options(layer) -> list[tuple[int, int, int]]:
    return [(ci, po, 1) for ci in divisors(layer.channels) for po in divisors(layer.outputs)]


def cycles(layer, ci: int, po: int, kp: int) -> int:
    return layer.in_pixels * (layer.outputs // po) * (layer.channels // ci)


def multipliers(layer, ci: int, po: int, kp: int) -> int:
    return ci * po


def plan_params(layer, widths, use_dsp: bool) -> dict:
    """The size-setting RTL parameters, as ``stage`` writes them."""
    return dict(NPIX=layer.in_pixels, C=layer.channels, OC=layer.outputs, CI=layer.ci, PO=layer.po,
                XW=widths.xw, XSIGNED=int(widths.x_signed), WW=widths.ww, ACCW=widths.accw, OW=widths.ow)


# ---- resources (structure from hw/rtl/ef_dense.v; coefficients fitted on Yosys: sim/calibrate.py) ----

def model(module: str, params: dict) -> Model:
    """The instance as structure: the weight ROM (one word of PO*CI weights per step), the bias
    ROM (PO biases per group), PO*CI DSP multipliers summed into PO lanes (a registered adder tree
    each), the ring of OC
    accumulators, the requantization of all OC outputs at once, the latched pixel rotating by CI
    channels per step, and the registers around them."""
    p = params
    npix, c, oc = p.get("NPIX", 1), p["C"], p["OC"]
    ci, po = p.get("CI", 1), p.get("PO", 1)
    xw, ww, accw, ow = p.get("XW", 8), p.get("WW", 8), p.get("ACCW", 32), p.get("OW", 16)
    lanes = po * ci
    groups, chunks = oc // po, c // ci
    steps = npix * groups * chunks
    wrom = map_memory(steps, lanes * ww, rom=True)
    brom = map_memory(groups, po * accw, rom=True)
    m = Model()
    m.exact = Resources(dsp=lanes * dsp_per_product(xw + 1, ww), bram18=wrom.bram18 + brom.bram18)
    counters = clog2(groups) + clog2(chunks) + clog2(npix) + clog2(steps)
    m.add("lut", "const", 1)
    m.add("lut", "counters", counters)
    m.add("lut", "sum", lanes * accw)
    m.add("lut", "lane", po * accw)
    m.add("lut", "ring", oc * accw * (groups > 1))
    m.add("lut", "requant", oc * accw)
    m.add("lut", "round", oc * accw * (p.get("SHIFT", 1) > 0))
    m.add("lut", "out", oc * ow)
    m.add("lut", "pixel", c * xw * (chunks > 1))
    m.add("lut", "wrom", rom_columns(steps, wrom.width) * rom_luts_per_bit(steps) * (wrom.kind == "logic"))
    m.add("lut", "wrom_words", rom_columns(steps, wrom.width) * steps / 32 * (wrom.kind == "logic"))
    m.add("lut", "brom", rom_columns(groups, brom.width) * rom_luts_per_bit(groups) * (brom.kind == "logic"))
    m.add("lut", "mem_mux", wrom.mux_bits + brom.mux_bits)
    m.add("ff", "const", 1)
    m.add("ff", "counters", counters)
    m.add("ff", "ring", oc * accw)
    m.add("ff", "pixel", c * xw * (chunks > 1))  # the latched pixel, rotating
    m.add("ff", "pixel_whole", c * xw * (chunks == 1))  # latched whole: a DSP input register may take it
    m.add("ff", "step_pixel", ci * xw)  # stage B's operands: DSP input registers take most
    m.add("ff", "bias", rom_columns(groups, po * accw) * (brom.kind == "logic") * (groups > 1))
    m.add("ff", "weights", rom_columns(steps, wrom.width) * (wrom.kind == "logic") * (steps > 1))
    m.add("ff", "out", oc * ow)
    # a tree (CI > 1): the products registered again (D2), each adder level registered, and the
    # step's flags and biases alongside
    levels = clog2(ci) if ci > 1 else 0
    words, tree_bits = ci, 0
    for _ in range(levels):
        words = (words + 1) // 2
        tree_bits += words * min(xw + 1 + ww + levels, accw)
    m.add("ff", "tree", (po * tree_bits + lanes * (xw + 1 + ww)) * (ci > 1))
    m.add("ff", "tree_steps", (levels + 1) * (4 + po * accw) * (ci > 1))
    return m


def resources(module: str, params: dict) -> Resources:
    """Predicted LUT, LUT RAM, FF, DSP and block RAM of one ef_dense instance with RTL ``params``."""
    return predict(module, model(module, params))


def dense_input(model, matmul) -> tuple[int, int, tuple[int, int]]:
    """(channels per pixel, pixels, map shape) of the stream a dense layer reads: the map it was
    flattened from, or one vector."""
    producer = model.find_producer(matmul.input[0])
    if producer is not None and producer.op_type == "Flatten":
        shape = model.get_tensor_shape(producer.input[0])
        if len(shape) == 4:
            return shape[1], shape[2] * shape[3], (shape[2], shape[3])
    return model.get_tensor_shape(matmul.input[0])[-1], 1, (1, 1)


def layer_plan(model, matmul):
    """The planner's row of a dense layer (MatMul; its bias Add is no layer of its own)."""
    from ..plan import LayerPlan

    weight = model.get_initializer(matmul.input[1])
    c, npix, shape = dense_input(model, matmul)
    return LayerPlan(matmul.name, "dense", 1, 1, c, weight.shape[1], (1, 1), npix, int(weight.size),
                     int(weight.size) + weight.shape[1], op=matmul.op_type, in_shape=shape)


def stage(model, p, matmul, inputs: list[StreamInfo], lanes) -> Stage:
    """ef_dense reading the (C, H, W) map it was flattened from as a pixel stream: its weight
    rows, in NCHW flatten order in the graph, are visited in stream (NHWC) order."""
    x = inputs[0]
    add = sole_consumer(model, matmul.output[0])
    x_t = p.tensors[matmul.input[0]] or p.tensors[model.find_producer(matmul.input[0]).input[0]]
    w_t, b_t, acc_t = (p.layers[matmul.name][k] for k in ("weight", "bias", "accum"))
    tensor, out_t, omin, omax = saturation(model, p, add)
    weight, ww = aligned_weights(model, matmul.input[1], x_t, w_t, acc_t)  # (C*H*W, OC)
    bias = align(to_int(model.get_initializer(add.input[1]), b_t), b_t.frac, acc_t.frac).reshape(-1)
    c, npix = x.channels, x.h * x.w
    oc = weight.shape[1]
    ci, po = lanes.ci, lanes.po
    rows = weight.reshape(c, npix, oc)  # [channel, pixel, output]
    words = [hex_word([rows[ch * ci + i, pix, g * po + lane] for lane in range(po) for i in range(ci)], ww)
             for pix in range(npix) for g in range(oc // po) for ch in range(c // ci)]
    params = dict(NPIX=npix, C=c, OC=oc, CI=ci, PO=po, XW=x_t.width, XSIGNED=int(x_t.signed), WW=ww,
                  ACCW=acc_t.width, SHIFT=acc_t.frac - out_t.frac, OW=out_t.width, OMIN=omin, OMAX=omax)
    biases = [hex_word(list(bias[g * po:(g + 1) * po]), acc_t.width) for g in range(oc // po)]
    return Stage(matmul.name, "ef_dense", params, {"WFILE": words, "BFILE": biases}, [], [("out", tensor)], oc,
                 out_t.width, lanes.cycles, lanes.multipliers, matmul.name, np.array([npix - 1]))


# ---- precision (the knobs the search sets, the types that follow; hw/precision.py) ----------

def knobs(model, matmul, ranges, is_output: bool) -> list:
    """The weights; the bias and the result are the Add's after it (``add.knobs``)."""
    return [param_knob(model, matmul.name, "weight", matmul.input[1])]


def derive_types(model, matmul, p, by_tensor: dict) -> None:
    """An exact accumulator; the MatMul's own output stays exact (None: the bias Add casts)."""
    weight = model.get_initializer(matmul.input[1])
    layer = p.layers[matmul.name]
    p.set_layer(matmul.name, "accum", exact_accumulator(p.tensors[matmul.input[0]], layer["weight"], layer["bias"],
                                                         weight.shape[0]))
    p.tensors[matmul.output[0]] = None


# ---- hls4ml (its configuration and its quirks; hw/hls.py) -----------------------------------

def hls_precision(cl, matmul, p) -> dict[str, dict[str, str]]:
    """Its types but the result: hls4ml fuses MatMul + bias Add into one Dense only when the
    MatMul's output type is left open (``patch_hls_model`` sets it afterwards)."""
    return hls_entries(matmul, p, ("weight",), skip=("result",))


def patch_hls_model(hls_model, cl, matmul, p) -> None:
    """hls4ml ignores the bias Add's type once fused into the Dense: set the Dense's output type
    to it (round half to even, saturate, as every cast of the design)."""
    from hls4ml.backends.fpga.fpga_types import APTypeConverter
    from hls4ml.model.types import FixedPrecisionType

    add = sole_consumer(cl, matmul.output[0])
    if add is None or add.op_type != "Add":
        return
    t = p.tensors[add.output[0]]
    layer = next((lay for lay in hls_model.get_layers() if lay.name in (matmul.name, f"Dense_{matmul.name}")), None)
    if t is None or layer is None:
        return
    layer.get_output_variable().type.precision = APTypeConverter().convert(FixedPrecisionType(
        t.width, t.integer, t.signed, rounding_mode="RND_CONV", saturation_mode="SAT"))


# ---- capability rule (its rows of the table in hw/capabilities.py; docs/onnx-support.md) ----

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


CAPABILITIES: tuple[Capability, ...] = (
    Capability("Gemm", "a dense layer (MatMul + bias), alpha, beta and transB folded into the weights",
               "transA=0; constant B and C; with or without bias", check_gemm, "ef_dense",
               ("tests/hw/test_features.py::test_feature_is_bit_exact[vgg_rgb]",)),
    Capability("MatMul", "a dense layer (a zero bias is added when none follows)", "constant 2-D weights",
               check_matmul, "ef_dense", ("tests/hw/test_capabilities.py::test_onnx_zoo_mnist_is_bit_exact",)),
)
