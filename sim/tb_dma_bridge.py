"""cocotb testbench for ef_dma_bridge alone: the DMA side and the core side both played by
cocotbext-axi, with random pauses everywhere. The "core" answers each pixel frame with two
scores derived from it (its pixel sum - 1000, and minus its length) so that sign extension and
frame order are visible. Transfers (``EF_TB_TRANSFERS``, JSON: list of byte lists, each one MM2S
packet) go in one after another; what the core saw and what the S2MM side got are written to
``EF_TB_RESULT`` (JSON) for the test to compare."""

from __future__ import annotations

import itertools
import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource


def pauses(seed: int, probability: float = 0.3):
    rng = random.Random(seed)
    return itertools.cycle([rng.random() < probability for _ in range(101)])


def score_words(pixels: list[int], bits: int) -> list[int]:
    mask = (1 << bits) - 1
    return [(sum(pixels) - 1000) & mask, (-len(pixels)) & mask]


async def fake_core(px: AxiStreamSink, sc: AxiStreamSource, seen: list, bits: int) -> None:
    while True:
        frame = await px.recv()
        pixels = list(frame.tdata)
        seen.append(pixels)
        await sc.send(AxiStreamFrame(score_words(pixels, bits)))


@cocotb.test()
async def bridge_frames_and_batches(dut):
    transfers = json.loads(os.environ["EF_TB_TRANSFERS"])
    bits = int(os.environ["EF_TB_SCORE_BITS"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    kwargs = {"reset": dut.rst_n, "reset_active_level": False}
    dma_out = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, **kwargs)
    dma_in = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, **kwargs)
    px = AxiStreamSink(AxiStreamBus.from_prefix(dut, "px"), dut.clk, **kwargs)
    sc = AxiStreamSource(AxiStreamBus.from_prefix(dut, "sc"), dut.clk, **kwargs)
    for i, end in enumerate((dma_out, dma_in, px, sc)):
        end.set_pause_generator(pauses(i))
    dut.rst_n.value = 0
    await ClockCycles(dut.clk, 4)
    dut.rst_n.value = 1
    seen: list = []
    cocotb.start_soon(fake_core(px, sc, seen, bits))
    received = []
    for data in transfers:
        await dma_out.send(AxiStreamFrame(bytes(data)))
        packet = await dma_in.recv()
        received.append(list(packet.tdata))
    with open(os.environ["EF_TB_RESULT"], "w") as f:
        json.dump({"core_frames": seen, "dma_packets": received}, f)
