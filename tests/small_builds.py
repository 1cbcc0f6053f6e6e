"""The tests' one way to convert a small quantized net for 16x16 cells: calibration cells as the
files hold them, 64 of them for the checks, the card's normalization given on the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def convert_cells(path: Path, calib_raw: np.ndarray, out: Path, spec, emulator: bool = True) -> dict:
    """``path`` converted into ``out`` (calibration: ``calib_raw`` as an .npz beside it); the report.
    ``emulator`` False: no g++ build of hls4ml's C simulation, for tests that never run it."""
    from edgefpga.hw.convert import ConvertConfig, convert

    np.savez(out.parent / f"{out.name}_calib.npz", images=calib_raw)
    cfg = ConvertConfig(calibration=str(out.parent / f"{out.name}_calib.npz"), calibration_images=64,
                        emulator_images=16, progress=False, scale=spec.scale, mean=spec.mean, std=spec.std,
                        emulator=emulator)
    return convert(str(path), out, cfg, log=lambda _m: None)
