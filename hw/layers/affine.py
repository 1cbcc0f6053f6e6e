"""ef_affine: the per-channel affine map y = x * scale + bias (the input normalization), its
hardware model: resources only (no lanes: one pixel per cycle, all channels at once)."""

from __future__ import annotations

import numpy as np

from .base import Resources
from .estimate import Model, predict
from .rule import Capability, GraphView, Refusal, attribute
from .stage import Stage, StreamInfo, align, saturation, to_int

MODULES = ("ef_affine",)


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

def stage(model, p, node, x: StreamInfo) -> Stage:
    """ef_affine: a BatchNormalization (the input normalization, or any per-channel scale and shift)."""
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


# ---- capability rule (its rows of the table in hw/capabilities.py; docs/onnx-support.md) ----

def check_batchnorm(node, g: GraphView) -> None:
    for i, name in enumerate(("scale", "B", "mean", "var"), start=1):
        g.constant(node, i, f"{name} (input {i})")
    if attribute(node, "training_mode", 0):
        raise Refusal("training_mode", "export the model in eval mode")


CAPABILITIES: tuple[Capability, ...] = (
    Capability("BatchNormalization", "folded into the Conv before it; elsewhere a per-channel scale and shift "
               "(also the input normalization)", "constant parameters, eval mode", check_batchnorm, "ef_affine",
               ("tests/hw/test_features.py::test_feature_is_bit_exact[post_add_bn]",)),
)
