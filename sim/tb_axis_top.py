"""cocotb testbench for a generated accelerator top (AXI-Stream in and out, cocotbext-axi): frames
back to back with random idle cycles on the input and backpressure on the output, a reset between
frames, a short frame (early tlast) and a long frame (tlast late); every score is compared with
the integer model, and after each malformed frame the next one must come out right.

``EF_TB_DATA`` (.npz): ``beats`` (object array of byte strings, one per frame as sent),
``expected`` (object array of score lists), ``reset_before`` (bool per frame), ``error`` (per
frame: "", "short" or "long"). Results go to ``EF_TB_RESULT`` (JSON)."""

from __future__ import annotations

import itertools
import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource


def pauses(probability: float, seed: int):
    rng = random.Random(seed)
    return itertools.cycle([rng.random() < probability for _ in range(997)])


async def reset(dut, cycles: int = 4):
    dut.rst_n.value = 0
    await ClockCycles(dut.clk, cycles)
    dut.rst_n.value = 1
    await RisingEdge(dut.clk)


def signed(word: int, bits: int) -> int:
    return word - (1 << bits) if word >> (bits - 1) else word


@cocotb.test()
async def axis_top(dut):
    data = np.load(os.environ["EF_TB_DATA"], allow_pickle=True)
    bits = int(os.environ.get("EF_TB_TDATA_BITS", "16"))
    idle, stall = float(os.environ.get("EF_TB_IDLE", "0.2")), float(os.environ.get("EF_TB_STALL", "0.2"))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst_n, reset_active_level=False)
    sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, dut.rst_n, reset_active_level=False,
                         byte_size=bits)
    source.set_pause_generator(pauses(idle, 1))
    sink.set_pause_generator(pauses(stall, 2))
    errors_seen = {"short": 0, "long": 0}

    async def watch_errors():
        while True:
            await RisingEdge(dut.clk)
            errors_seen["short"] += int(dut.err_short.value == 1)
            errors_seen["long"] += int(dut.err_long.value == 1)
    cocotb.start_soon(watch_errors())
    await reset(dut)
    results = []
    frames = list(zip(data["beats"], data["expected"], data["reset_before"]))
    starts = [i for i, f in enumerate(frames) if i == 0 or f[2]] + [len(frames)]
    for begin, end in zip(starts, starts[1:]):   # segments between resets: frames sent back to back
        if frames[begin][2]:
            await reset(dut)
        for beats, _, _ in frames[begin:end]:
            source.send_nowait(AxiStreamFrame(bytes(beats)))
        for _, expected, _ in frames[begin:end]:
            frame = await sink.recv()
            got = [signed(int(w), bits) for w in frame.tdata]
            want = [int(v) for v in expected]
            results.append({"got": got, "want": want, "ok": got == want})
        await source.wait()
    with open(os.environ["EF_TB_RESULT"], "w") as fh:
        json.dump({"frames": results, "err_short_pulses": errors_seen["short"],
                   "err_long_pulses": errors_seen["long"]}, fh)
    assert all(r["ok"] for r in results)
