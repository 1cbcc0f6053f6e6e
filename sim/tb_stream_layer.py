"""cocotb testbench for one streaming layer (valid/ready pixel streams): feeds the pixel words in
``EF_TB_DATA`` (an .npz with ``inputs`` and ``expected``, frames back to back) with random idle
cycles, applies random backpressure on the output, and checks every output word; the cycle of
each frame's first input and last output goes to ``EF_TB_RESULT`` (JSON)."""

from __future__ import annotations

import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge


async def drive_inputs(dut, frames: list[list[int]], idle: float, starts: list[int], cycle: list[int]):
    for frame in frames:
        first = True
        for word in frame:
            while random.random() < idle:
                dut.in_valid.value = 0
                await RisingEdge(dut.clk)
            dut.in_valid.value = 1
            dut.in_data.value = word
            while True:
                await ReadOnly()
                accepted = dut.in_ready.value == 1  # the transfer happens at the coming edge
                if accepted and first:
                    starts.append(cycle[0])
                    first = False
                await RisingEdge(dut.clk)
                if accepted:
                    break
    dut.in_valid.value = 0


@cocotb.test()
async def stream_layer(dut):
    data = np.load(os.environ["EF_TB_DATA"], allow_pickle=True)
    frames = [list(map(int, f)) for f in data["inputs"]]
    expected = [list(map(int, f)) for f in data["expected"]]
    idle, stall = float(os.environ.get("EF_TB_IDLE", "0.2")), float(os.environ.get("EF_TB_STALL", "0.2"))
    random.seed(int(os.environ.get("EF_TB_SEED", "1")))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    cycle = [0]
    dut.rst_n.value = 0
    dut.in_valid.value = 0
    dut.out_ready.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst_n.value = 1

    async def count():
        while True:
            await RisingEdge(dut.clk)
            cycle[0] += 1
    cocotb.start_soon(count())
    starts: list[int] = []
    cocotb.start_soon(drive_inputs(dut, frames, idle, starts, cycle))
    ends, mismatches = [], []
    for f, frame in enumerate(expected):
        for i, want in enumerate(frame):
            while True:
                ready = int(random.random() >= stall)
                dut.out_ready.value = ready
                await ReadOnly()
                fired = ready and dut.out_valid.value == 1
                got = int(dut.out_data.value) if fired else None
                await RisingEdge(dut.clk)
                if fired:
                    break
            if got != want and len(mismatches) < 10:
                mismatches.append({"frame": f, "word": i, "got": hex(got), "want": hex(want)})
        ends.append(cycle[0])
    with open(os.environ["EF_TB_RESULT"], "w") as fh:
        json.dump({"frames": len(expected), "mismatches": mismatches, "first_input_cycle": starts,
                   "last_output_cycle": ends}, fh)
    assert not mismatches, mismatches
