"""ef_gpool: a global (whole-map) max or average pool, its hardware model.

Lanes: CI channels folded per cycle; in_pixels x (C/CI) cycles per frame. No multipliers (the
average's divider is one constant multiplication shared by the channels).
"""

from __future__ import annotations

from .base import Resources, clog2, divisors
from .estimate import Model, predict
from .pool import average_model

MODULES = ("ef_gpool",)
KINDS = ("gpool",)


def lane_options(layer) -> list[tuple[int, int, int]]:
    return [(ci, 1, 1) for ci in divisors(layer.channels)]


def cycles(layer, ci: int, po: int, kp: int) -> int:
    return layer.in_pixels * (layer.channels // ci)


def multipliers(layer, ci: int, po: int, kp: int) -> int:
    return 0


def plan_params(layer, widths, use_dsp: bool) -> dict:
    """The size-setting RTL parameters, as hw/rtlgen.py ``pool_stage`` writes them for a global pool
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
