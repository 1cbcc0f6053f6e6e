"""``emulator``: hls4ml's C simulation of the HLS design (the bit-accurate golden model), compiled
with g++ from the build folder's hls4ml project."""

from __future__ import annotations

import importlib.util

import numpy as np

from .base import Backend, BackendOutput, BackendUnavailable


class EmulatorBackend(Backend):
    name = "emulator"
    max_batch = 16

    def __init__(self, model):
        from edgefpga.hw.hls import Emulator, EmulatorError  # hls4ml: only when this backend is used

        super().__init__(model)
        build = model.needs_build(self.name)
        try:
            self.emulator = Emulator.load(build / "hls", [1, model.spec.channels, model.spec.height, model.spec.width])
        except EmulatorError as exc:
            raise BackendUnavailable(str(exc)) from exc

    @classmethod
    def unavailable(cls, model) -> str | None:
        if model.build_dir is None:
            return "no build folder"
        if importlib.util.find_spec("hls4ml") is None:
            return "hls4ml is not installed (pip install 'edgefpga[convert]')"
        if not (model.build_dir / "hls").is_dir():
            return f"{model.build_dir}/hls is missing"
        return None

    def run(self, pixels: np.ndarray) -> BackendOutput:
        return BackendOutput(self.dequantized(self.emulator.predict(pixels).astype(np.float64)))

    def describe(self) -> str:
        return f"emulator (hls4ml C simulation of {self.model.build_dir}/hls)"
