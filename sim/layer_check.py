"""Bit-exact check of one generated RTL layer against the integer model, in cocotb + Verilator:
real images go through the integer model, the layer's input values are streamed into the Verilog
module with random idle cycles and output backpressure, and every output word is compared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from edgefpga.hw.convert import PRECISIONS_FILE
from edgefpga.hw.intmodel import IntegerModel
from edgefpga.hw.precision import Precisions
from edgefpga.hw.rtlgen import RTL_DIR, conv_layer, pack_pixels

from .verilator import SimulatorError, build_and_test


def load_design(build_dir: Path) -> tuple[ModelWrapper, Precisions]:
    precisions = Precisions.from_dict(json.loads((build_dir / PRECISIONS_FILE).read_text()))
    return ModelWrapper(str(build_dir / "model" / "canonical.onnx")), precisions


def check_conv_layer(build_dir: Path, node: str, ci: int, po: int, pixels: np.ndarray, work: Path,
                     idle: float = 0.2, stall: float = 0.2, seed: int = 1, corrupt: bool = False,
                     use_dsp: bool = True, kp: int = 1) -> dict:
    """Stream ``pixels`` (N, C, H, W uint8 network inputs) through the integer model up to
    ``node``'s input, then through ef_conv2d; return the testbench's result (``mismatches``, cycles).
    ``corrupt`` flips one expected bit: the negative control that shows the check can fail."""
    model, precisions = load_design(Path(build_dir))
    layer = conv_layer(model, precisions, node, ci, po, kp)
    values = IntegerModel(model, precisions).run_all(pixels)
    conv = model.get_node_from_name(node)
    relu = model.find_consumer(conv.output[0])
    out_tensor = relu.output[0] if relu is not None and relu.op_type == "Relu" else conv.output[0]
    inputs = [pack_pixels(x, layer.params["XW"]) for x in values[conv.input[0]].q]
    expected = [pack_pixels(y, layer.params["OW"]) for y in values[out_tensor].q]
    if corrupt:
        expected[0][len(expected[0]) // 2] ^= 1
    work.mkdir(parents=True, exist_ok=True)
    wfile, bfile = layer.write_roms(work)
    np.savez(work / "tb.npz", inputs=np.array(inputs, dtype=object), expected=np.array(expected, dtype=object))
    result_file = work / "result.json"
    result_file.unlink(missing_ok=True)
    params = dict(layer.params, USE_DSP=int(use_dsp), WFILE=f'"{wfile}"', BFILE=f'"{bfile}"')
    build_and_test([RTL_DIR / "ef_conv2d.v"], "ef_conv2d", params, work / "sim", "edgefpga.sim.tb_stream_layer",
                   {"EF_TB_DATA": str(work / "tb.npz"), "EF_TB_RESULT": str(result_file),
                    "EF_TB_IDLE": str(idle), "EF_TB_STALL": str(stall), "EF_TB_SEED": str(seed)}, [RTL_DIR])
    if not result_file.is_file():
        raise SimulatorError(f"{node}: the testbench wrote no result; see {work / 'sim' / 'test.log'}")
    return json.loads(result_file.read_text())
