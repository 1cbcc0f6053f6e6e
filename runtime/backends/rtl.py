"""``rtl``: the generated Verilog compiled with Verilator into a native program (no cocotb) that
streams frames through the accelerator's AXI-Stream ports and reports exact clock cycles."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from edgefpga.sim.rtl_harness import build_harness, run_harness, to_signed
from edgefpga.sim.verilator import SimulatorError, verilator_binary

from .base import Backend, BackendError, BackendOutput, BackendUnavailable


class RtlBackend(Backend):
    name = "rtl"
    max_batch = 64

    def __init__(self, model, timeout_s: float = 600.0):
        super().__init__(model)
        build = model.needs_build(self.name)
        reason = self.unavailable(model)
        if reason:
            raise BackendUnavailable(f"rtl backend: {reason}")
        self.manifest = json.loads((build / "rtl" / "manifest.json").read_text())
        self.timeout_s = timeout_s
        try:
            harness = build_harness(build / "rtl", build / "sim")
            self.program, self.build_seconds = harness.program, harness.seconds
        except SimulatorError as exc:
            raise BackendUnavailable(str(exc)) from exc
        self.clock_mhz = json.loads((build / "report.json").read_text())["board"]["clock_mhz"]

    @classmethod
    def unavailable(cls, model) -> str | None:
        if model.build_dir is None:
            return "no build folder"
        if not (model.build_dir / "rtl" / "manifest.json").is_file():
            return f"{model.build_dir}/rtl/manifest.json is missing (convert again with this version)"
        try:
            verilator_binary()
        except SimulatorError as exc:
            return str(exc)
        return None

    def run(self, pixels: np.ndarray) -> BackendOutput:
        out = self.manifest["output"]
        with tempfile.TemporaryDirectory(prefix="edgefpga-rtl-") as work:
            try:
                run = run_harness(self.program, pixels, out["outputs"], Path(work), timeout_s=self.timeout_s)
            except SimulatorError as exc:
                raise BackendError(str(exc)) from exc
        if run.framing_errors:
            raise BackendError(f"{self.program}: {run.framing_errors} frame(s) came out with the wrong number of scores")
        scores = self.dequantized(to_signed(run.scores, out["tdata_bits"]) / 2.0 ** out["frac"])
        return BackendOutput(scores, run.latency_cycles)

    def describe(self) -> str:
        return f"rtl (Verilator model of {self.manifest['top']}, {self.clock_mhz:g} MHz clock for cycle times)"
