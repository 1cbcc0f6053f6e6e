"""cocotb test: a PYNQ driver function, unchanged, on the simulated PS-PL.

The design under test is the overlay wrapper (AXI-DMA bridge + accelerator). The test builds the
simulated PL from the overlay's .hwh, then runs the driver named in the configuration
(``module:function``, called with the configuration dict) in a thread bridged into cocotb, where
``edgefpga.sim.pynq_sim`` stands in for ``pynq``. Its return value (JSON-able) is the result.
Configuration and result: JSON files, ``EF_PYNQ_CONFIG`` and its ``result`` key."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import cocotb
from cocotb.task import bridge

from . import pynq_sim


def load_driver(name: str):
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


@cocotb.test()
async def driver_on_simulated_pl(dut):
    cfg = json.loads(Path(os.environ["EF_PYNQ_CONFIG"]).read_text())
    pynq_sim.SimulatedPL(dut, Path(cfg["hwh"]))
    result = await bridge(load_driver(cfg["driver"]))(cfg)
    Path(cfg["result"]).write_text(json.dumps(result) + "\n")
