"""cocotb testbench for one streaming layer (valid/ready pixel streams): feeds the pixel words in
``EF_TB_DATA`` (an .npz with ``inputs`` and ``expected``, frames back to back; a join's second
input as ``inputs_b``) with random idle cycles on each input, applies random backpressure on the output, and checks every output word; the cycle of
each frame's first input and last output goes to ``EF_TB_RESULT`` (JSON)."""

from __future__ import annotations

import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge


async def drive_inputs(dut, frames: list[list[int]], idle: float, starts: list[int], cycle: list[int], port: str = "in"):
    valid, data, ready = (getattr(dut, f"{port}_{s}") for s in ("valid", "data", "ready"))
    for frame in frames:
        first = True
        for word in frame:
            while random.random() < idle:
                valid.value = 0
                await RisingEdge(dut.clk)
            valid.value = 1
            data.value = word
            while True:
                await ReadOnly()
                accepted = ready.value == 1  # the transfer happens at the coming edge
                if accepted and first:
                    starts.append(cycle[0])
                    first = False
                await RisingEdge(dut.clk)
                if accepted:
                    break
    valid.value = 0


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
    ports = os.environ.get("EF_TB_PORTS", "in").split(",")  # a join's two inputs: "a,b", each with its own idles
    for port in ports:
        getattr(dut, f"{port}_valid").value = 0
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
    cocotb.start_soon(drive_inputs(dut, frames, idle, starts, cycle, ports[0]))
    for port in ports[1:]:
        others = [list(map(int, f)) for f in data[f"inputs_{port}"]]
        cocotb.start_soon(drive_inputs(dut, others, idle, [], cycle, port))
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
