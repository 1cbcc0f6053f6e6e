"""Bit-exact check of one generated RTL stage against the integer model, in cocotb + Verilator:
real images go through the integer model, the stage's input values are streamed into its Verilog
module (with the parameters and ROM files of the build's manifest) with random idle cycles and
output backpressure, and every output word is compared. When a whole network is not bit-exact,
this says which layer is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from edgefpga.hw.convert import PRECISIONS_FILE
from edgefpga.hw.intmodel import IntegerModel
from edgefpga.hw.precision import Precisions
from edgefpga.hw.rtlgen import RTL_DIR, pack_pixels

from .verilator import SimulatorError, build_and_test


def load_design(build_dir: Path) -> tuple[ModelWrapper, Precisions]:
    precisions = Precisions.from_dict(json.loads((build_dir / PRECISIONS_FILE).read_text()))
    return ModelWrapper(str(build_dir / "model" / "canonical.onnx")), precisions


def stage_words(values: np.ndarray, bits: int) -> list[list[int]]:
    """Per frame, the stream's pixel words: a map (N, C, H, W) in raster order, a vector (N, C) as one pixel."""
    if values.ndim == 2:
        values = values[:, :, None, None]
    return [pack_pixels(v, bits) for v in values]


def check_stage(build_dir: Path, stage_name: str, pixels: np.ndarray, work: Path, idle: float = 0.2,
                stall: float = 0.2, seed: int = 1, corrupt: bool = False, params: dict | None = None) -> dict:
    """Stream ``pixels`` (N, C, H, W uint8 network inputs) through the integer model up to the
    stage's input tensor, then through the stage's module; return the testbench's result
    (``mismatches``, cycles). ``corrupt`` flips one expected bit: the negative control that shows
    the check can fail. ``params`` override the manifest's (e.g. USE_DSP)."""
    build_dir, work = Path(build_dir).resolve(), Path(work).resolve()
    manifest = json.loads((build_dir / "rtl" / "manifest.json").read_text())
    stage = next((s for s in manifest["stages"] if s["name"] == stage_name), None)
    if stage is None:
        raise SimulatorError(f"{build_dir}: no stage {stage_name!r}; stages: {[s['name'] for s in manifest['stages']]}")
    ins = [p for p in stage["ports"] if p["dir"] == "in"]
    outs = [p for p in stage["ports"] if p["dir"] == "out"]
    if len(ins) not in (1, 2) or len(outs) != 1:
        raise SimulatorError(f"{stage_name} ({stage['module']}): only stages with one output and one or two inputs "
                             "are checked alone")
    model, precisions = load_design(build_dir)
    values = IntegerModel(model, precisions).run_all(pixels)
    words, bits = {}, {}
    for port in ins:  # a branch's stream (after its fork or FIFO) carries the tensor it was forked from
        q = values[tensor_of(port["stream"], values)].q
        bits[port["port"]] = port["bits"] // max(1, values_channels(q))
        words[port["port"]] = stage_words(q, bits[port["port"]])
    inputs, x_bits = words[ins[0]["port"]], bits[ins[0]["port"]]
    expected = stage_words(values[outs[0]["stream"]].q, stage["params"].get("OW", x_bits))
    if corrupt:
        expected[0][len(expected[0]) // 2] ^= 1
    work.mkdir(parents=True, exist_ok=True)
    src = build_dir / "rtl" / "src"
    roms = {k: f'"{(src / name).resolve()}"' for k, name in stage["roms"].items()}
    others = {f"inputs_{port}": np.array(w, dtype=object) for port, w in words.items() if port != ins[0]["port"]}
    np.savez(work / "tb.npz", inputs=np.array(inputs, dtype=object), expected=np.array(expected, dtype=object), **others)
    result_file = work / "result.json"
    result_file.unlink(missing_ok=True)
    build_and_test([RTL_DIR / f"{stage['module']}.v"], stage["module"], {**stage["params"], **roms, **(params or {})},
                   work / "sim", "edgefpga.sim.tb_stream_layer",
                   {"EF_TB_DATA": str(work / "tb.npz"), "EF_TB_RESULT": str(result_file),
                    "EF_TB_PORTS": ",".join(p["port"] for p in ins), "EF_TB_IDLE": str(idle), "EF_TB_STALL": str(stall), "EF_TB_SEED": str(seed)}, [RTL_DIR])
    if not result_file.is_file():
        raise SimulatorError(f"{stage_name}: the testbench wrote no result; see {work / 'sim' / 'test.log'}")
    return json.loads(result_file.read_text())


def tensor_of(stream: str, values: dict) -> str:
    """The integer model's tensor a stream carries: its own name, or for a fork's branch
    (``<tensor>_a``, ``<tensor>_b``, then ``_fifo``) the tensor forked."""
    name = stream
    while name not in values and name.rsplit("_", 1)[-1] in ("a", "b", "fifo"):
        name = name.rsplit("_", 1)[0]
    if name not in values:
        raise SimulatorError(f"stream {stream!r}: no tensor of the integer model carries it")
    return name


def values_channels(q: np.ndarray) -> int:
    return q.shape[1]
