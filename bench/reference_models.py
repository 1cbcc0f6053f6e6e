"""MLPerf Tiny's reference shapes on a PYNQ-Z2: `python bench/run.py reference_models` writes
bench/results/reference_models.json.

For each reference shape of the zoo (models/reference.py): `edgefpga convert` for the board,
`edgefpga verify --resources` on the held-out images (the RTL bit-exact with the integer model
and the hls4ml emulator, exact II and latency, the Yosys estimate), and the frame rate at the
board clock next to MLPerf Tiny v1.0's published results for the same shapes on the same board.
A shape that does not fit is estimated again for the larger boards, to say which one it fits.
"""

from __future__ import annotations

import time
from pathlib import Path

# MLPerf Tiny inference v1.0 (closed division), PYNQ-Z2 at 100 MHz: the published throughput of
# the same shapes by the tools users compare us with
MLPERF_TINY_V1_0 = {
    "resnet8_ref": {"system": "hls4ml RN08 (image classification), PYNQ-Z2", "inferences_per_s": 130.8},
    "mobilenet_v1_025_ref": {"system": "FINN CNV-W1A1 (image classification), PYNQ-Z2; no visual wake words "
                                       "entry on this board", "inferences_per_s": 661.0},
}
LARGER_BOARDS = ("kv260", "zcu104")


def convert_and_verify(name: str, board: str, out: Path, frames: int | None, jobs: int) -> dict:
    from edgefpga.hw.convert import ConvertConfig, convert
    from edgefpga.models.card import ZOO
    from edgefpga.sim.verify import VerifyFailed, verify

    start = time.perf_counter()
    report = convert(str(ZOO / name), out, ConvertConfig(board=board, progress=False), force=True,
                     log=lambda m: print(f"[{name} {board}] {m}", flush=True))
    convert_s = time.perf_counter() - start
    try:
        result = verify(out, limit=frames, progress=False, resources=True, jobs=jobs)
    except VerifyFailed as failed:
        result = failed.result
    return {"report": report, "verify": result, "convert_s": round(convert_s, 1)}


def summary(name: str, board: str, run: dict) -> dict:
    report, result = run["report"], run["verify"]
    rtl, emu, res = result["rtl"], result["emulator"], result["resources"]
    row = {
        "board": board, "part": report["board"]["part"], "clock_mhz": report["board"]["clock_mhz"],
        "params": report["totals"]["params"], "macs": report["totals"]["macs"],
        "frames": rtl["n"], "rtl_bit_exact_frames": rtl["bit_exact_frames"],
        "emulator": emu["model"], "emulator_bit_exact_frames": emu.get("integer_model_bit_exact_images"),
        "top1_agreement_with_float": emu["top1_agreement"],
        "ii_cycles": rtl["ii_cycles"], "roofline_cycles": rtl["roofline_cycles"], "ii_over_roofline": rtl["ii_over_roofline"],
        "latency_cycles": rtl["latency_cycles"], "fps_at_clock": rtl["fps_at_clock"],
        "latency_us_at_clock": round(rtl["latency_cycles"] / report["board"]["clock_mhz"], 1),
        "multipliers": report["estimate"]["multipliers"], "dsp_multipliers": report["estimate"]["dsp_multipliers"],
        "resources": {"used": res["used"], "share": res["share"], "fits_within_80_percent": res["fits"]},
        "failed_checks": result["failed"], "convert_s": run["convert_s"], "yosys_s": res["seconds"],
    }
    over = {k: {"used": res["used"][k], "limit": round(res["available"][k] * res["limit_share"], 1)}
            for k, v in res["share"].items() if v > res["limit_share"]}
    if over:
        row["over_80_percent"] = over
    return row


def bench_reference_models(frames: int | None = None, jobs: int = 2, board: str = "pynq-z2") -> dict:
    """Every reference shape on ``board`` (all held-out images unless ``frames``)."""
    from edgefpga.models.reference import REFERENCES

    rows = {}
    for name in REFERENCES:
        run = convert_and_verify(name, board, Path("build") / f"{name}_{board}", frames, jobs)
        row = summary(name, board, run)
        mlperf = MLPERF_TINY_V1_0[name]
        row["mlperf_tiny_v1_0"] = dict(mlperf, ratio=round(row["fps_at_clock"] / mlperf["inferences_per_s"], 1))
        if not row["resources"]["fits_within_80_percent"]:
            row["larger_boards"] = {}
            for other in LARGER_BOARDS:
                alt = summary(name, other, convert_and_verify(name, other, Path("build") / f"{name}_{other}", 32, jobs))
                row["larger_boards"][other] = {k: alt[k] for k in ("resources", "fps_at_clock", "ii_cycles",
                                                                   "rtl_bit_exact_frames", "frames")}
        rows[name] = row
    return {"board": board, "note": "RTL bit-exact counts under 10 % idle input and 10 % backpressure; II and "
            "latency exact cycles from Verilator; resources: Yosys synth_xilinx estimate (sum of per-layer "
            "syntheses), fits = every resource within 80 % of the board", "models": rows}
