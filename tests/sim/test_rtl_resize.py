"""ef_resize alone in cocotb + Verilator, at the shapes a network test does not reach: a factor of 3
on both axes of a 3-pixel-wide map with two channels, frames back to back. With random idle input
and output backpressure every word is the integer model's (each pixel KW times, each row KH times);
with neither, the module sends one output pixel per cycle, frame after frame (H*W*KH*KW cycles
each). tests/hw/test_resize.py checks factors 2x2 and 2x1 inside a converted network."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgefpga.hw.layers.resize import repeat
from edgefpga.hw.rtlgen import RTL_DIR, pack_pixels
from edgefpga.sim.verilator import build_and_test

pytestmark = pytest.mark.timeout(300)

H, W, C, XW, KH, KW = 2, 3, 2, 5, 3, 3
FRAMES = 3


def run(work, frames, expected, idle: float, stall: float) -> dict:
    """Stream ``frames`` through ef_resize and return the testbench's result (the rebuilds of the
    same Verilog come from the compiler cache)."""
    np.savez(work / "tb.npz", inputs=np.array(frames, dtype=object), expected=np.array(expected, dtype=object))
    result = work / "result.json"
    result.unlink(missing_ok=True)
    build_and_test([RTL_DIR / "ef_resize.v"], "ef_resize", dict(W=W, C=C, XW=XW, KH=KH, KW=KW), work / "sim",
                   "edgefpga.sim.tb_stream_layer", {"EF_TB_DATA": str(work / "tb.npz"), "EF_TB_RESULT": str(result),
                                                    "EF_TB_IDLE": str(idle), "EF_TB_STALL": str(stall),
                                                    "EF_TB_SEED": "3"})
    return json.loads(result.read_text())


def test_resize_module_repeats_pixels_and_rows(tmp_path):
    rng = np.random.default_rng(0)
    q = rng.integers(0, 1 << XW, (FRAMES, C, H, W))
    frames = [pack_pixels(f, XW) for f in q]
    expected = [pack_pixels(f, XW) for f in repeat(q, KH, KW)]
    stalled = run(tmp_path, frames, expected, 0.3, 0.3)
    assert stalled["frames"] == FRAMES and stalled["mismatches"] == [], stalled
    free = run(tmp_path, frames, expected, 0.0, 0.0)
    assert free["mismatches"] == [], free
    ends = free["last_output_cycle"]
    assert np.diff(ends).tolist() == [H * W * KH * KW] * (FRAMES - 1), free  # one output pixel per cycle
