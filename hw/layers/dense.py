"""ef_dense: a fully connected layer reading the (flattened) map as a pixel stream, its hardware model.

Lanes: CI input channels x PO outputs per cycle; NPIX x (OC/PO) x (C/CI) steps per frame.
Its multipliers are always DSP48s (the module has no LUT-multiplier variant).
"""

from __future__ import annotations

from .base import Resources, clog2, divisors
from .estimate import Model, dsp_per_product, map_memory, predict, rom_columns, rom_luts_per_bit

MODULES = ("ef_dense",)
KINDS = ("dense",)
LUT_MULTIPLIERS = False  # ef_dense has no USE_DSP parameter


def lane_options(layer) -> list[tuple[int, int, int]]:
    return [(ci, po, 1) for ci in divisors(layer.channels) for po in divisors(layer.outputs)]


def cycles(layer, ci: int, po: int, kp: int) -> int:
    return layer.in_pixels * (layer.outputs // po) * (layer.channels // ci)


def multipliers(layer, ci: int, po: int, kp: int) -> int:
    return ci * po


def plan_params(layer, widths, use_dsp: bool) -> dict:
    """The size-setting RTL parameters, as hw/rtlgen.py ``dense_stage`` writes them."""
    return dict(NPIX=layer.in_pixels, C=layer.channels, OC=layer.outputs, CI=layer.ci, PO=layer.po,
                XW=widths.xw, XSIGNED=int(widths.x_signed), WW=widths.ww, ACCW=widths.accw, OW=widths.ow)


# ---- resources (structure from hw/rtl/ef_dense.v; coefficients fitted on Yosys: sim/calibrate.py) ----

def model(module: str, params: dict) -> Model:
    """The instance as structure: the weight ROM (one word of PO*CI weights per step), the bias
    ROM (PO biases per group), PO*CI DSP multipliers summed into PO lanes, the ring of OC
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
    return m


def resources(module: str, params: dict) -> Resources:
    """Predicted LUT, LUT RAM, FF, DSP and block RAM of one ef_dense instance with RTL ``params``."""
    return predict(module, model(module, params))
