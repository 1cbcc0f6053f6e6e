"""ef_act: an activation that could not be fused into the layer before it (ReLU / Clip, or
LeakyReLU), its hardware model: resources only (one pixel per cycle, all channels at once)."""

from __future__ import annotations

from .base import Resources
from .estimate import Model, predict

MODULES = ("ef_act",)


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
