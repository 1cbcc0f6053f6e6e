"""ef_affine: the per-channel affine map y = x * scale + bias (the input normalization), its
hardware model: resources only (no lanes: one pixel per cycle, all channels at once)."""

from __future__ import annotations

from .base import Resources
from .estimate import Model, predict

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
