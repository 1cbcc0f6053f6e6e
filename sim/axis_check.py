"""The whole generated accelerator in cocotb + Verilator through its AXI-Stream ports (tb_axis_top):
protocol cases the bulk harness does not cover (reset between frames, short and long frames)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgefpga.hw.intmodel import IntegerModel

from .layer_check import load_design
from .verilator import SimulatorError, build_and_test


def frame_beats(pixels: np.ndarray) -> bytes:
    """(C, H, W) pixels as the input stream carries them: row-major, channels interleaved."""
    return np.ascontiguousarray(pixels.transpose(1, 2, 0)).astype(np.uint8).tobytes()


def received_frame(beats: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """The frame the accelerator computes from ``beats``: a short frame is completed with zeros,
    a long one cut at the frame size (see ef_axis_in.v)."""
    c, h, w = shape
    full = np.zeros(h * w * c, np.uint8)
    used = np.frombuffer(beats, np.uint8)[: full.size]
    full[: used.size] = used
    return full.reshape(h, w, c).transpose(2, 0, 1)


def check_axis_top(build_dir: Path, sequence: list[dict], work: Path, idle: float = 0.2, stall: float = 0.2) -> dict:
    """Run ``sequence`` (dicts with ``beats`` bytes, optional ``reset_before``) through the top;
    expected scores come from the integer model of what each frame amounts to."""
    build_dir = Path(build_dir)
    manifest = json.loads((build_dir / "rtl" / "manifest.json").read_text())
    shape = (manifest["input"]["channels"], manifest["input"]["height"], manifest["input"]["width"])
    model, precisions = load_design(build_dir)
    frames = np.stack([received_frame(item["beats"], shape) for item in sequence])
    expected = IntegerModel(model, precisions).run(frames).q
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "tb.npz", beats=np.array([item["beats"] for item in sequence], dtype=object),
             expected=np.array([list(map(int, e)) for e in expected], dtype=object),
             reset_before=np.array([bool(item.get("reset_before")) for item in sequence]))
    result_file = work / "result.json"
    result_file.unlink(missing_ok=True)
    rtl = build_dir / "rtl"
    build_and_test([rtl / s for s in manifest["sources"]], manifest["top"],
                   {"MEM_DIR": f'"{(rtl / "src").resolve()}/"'}, work / "sim", "edgefpga.sim.tb_axis_top",
                   {"EF_TB_DATA": str(work / "tb.npz"), "EF_TB_RESULT": str(result_file),
                    "EF_TB_TDATA_BITS": str(manifest["output"]["tdata_bits"]),
                    "EF_TB_IDLE": str(idle), "EF_TB_STALL": str(stall)},
                   [rtl / inc for inc in manifest.get("includes", [])])
    if not result_file.is_file():
        raise SimulatorError(f"{manifest['top']}: the testbench wrote no result; see {work / 'sim' / 'test.log'}")
    return json.loads(result_file.read_text())
