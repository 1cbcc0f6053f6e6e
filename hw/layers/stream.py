"""The AXI-Stream ends of a design, their hardware models (resources only): ``ef_axis_in`` (8-bit
beats gathered into pixels of C channels) and ``ef_axis_out`` (a vector of scores sent one per beat)."""

from __future__ import annotations

from .base import Resources, clog2
from .estimate import Model, predict

MODULES = ("ef_axis_in", "ef_axis_out")


def model(module: str, params: dict) -> Model:
    m = Model()
    m.add("lut", "const", 1)
    m.add("ff", "const", 1)
    if module == "ef_axis_in":
        c = params.get("C", 1)
        m.add("lut", "gather", 8 * c * (c > 1))  # the channel's lane of the pixel: a shifted mask
        m.add("ff", "pixel", 8 * c * (1 + (c > 1)))  # the output register and, with channels, the gather
        return m
    n, ow, p = params.get("N", 2), params.get("OW", 16), params.get("P", 1)
    m.add("lut", "shift", n * ow)
    m.add("lut", "index", clog2(n) + clog2(p))
    m.add("ff", "scores", n * ow)
    m.add("ff", "index", clog2(n) + clog2(p))
    return m


def resources(module: str, params: dict) -> Resources:
    return predict(module, model(module, params))
