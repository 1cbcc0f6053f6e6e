"""The residual block's plumbing and join, their hardware models (resources only):
``ef_add`` (the two branches added channel by channel, one rounding cast), ``ef_fork`` (one
stream to two readers) and ``ef_fifo`` (the branch that runs ahead waits here)."""

from __future__ import annotations

from .base import Resources, clog2
from .estimate import Model, map_memory, predict

MODULES = ("ef_add", "ef_fork", "ef_fifo")


def model(module: str, params: dict) -> Model:
    m = Model()
    m.add("lut", "const", 1)
    m.add("ff", "const", 1)
    if module == "ef_fork":
        return m
    if module == "ef_fifo":
        bits, depth = params["BITS"], params["DEPTH"]
        mem = map_memory(depth, bits, reads=1)
        m.exact = Resources(lutram=mem.lutram, bram18=mem.bram18, ff=mem.out_ff + (depth * bits if mem.kind == "logic" else 0))
        m.add("lut", "mux", mem.mux_bits)
        m.add("lut", "counters", clog2(depth) + 1)
        m.add("lut", "logic", bits * depth * (mem.kind == "logic"))
        m.add("ff", "counters", clog2(depth) + 1)
        return m
    c, ow = params.get("C", 1), params.get("OW", 8)
    width = max(params.get("AW_", 8) + params.get("ALIGN_A", 0), params.get("BW_", 8) + params.get("ALIGN_B", 0)) + 1
    m.add("lut", "sum", c * width)
    m.add("lut", "round", c * width * (params.get("SHIFT", 0) > 0))
    m.add("lut", "out", c * ow)
    m.add("ff", "out", c * ow)
    return m


def resources(module: str, params: dict) -> Resources:
    return predict(module, model(module, params))
