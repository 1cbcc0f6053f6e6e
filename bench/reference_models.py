"""MLPerf Tiny's reference shapes (and a dense-head net of our own) on a PYNQ-Z2: `python
bench/run.py reference_models` writes bench/results/reference_models.json.

For each reference shape of the zoo (models/reference.py): `edgefpga convert` for the board
(the planner fits the design to 80 % of every resource, or refuses), `edgefpga verify
--resources` on the held-out images (the RTL bit-exact with the integer model and the hls4ml
emulator, exact II and latency, the predicted fit and the Yosys count, and how far apart they
are per resource: the check is +-10 %), and the frame rate at the board's nominal clock (not a
placed-and-routed one: docs/rtl.md, Timing) next to MLPerf Tiny's published results for the
same shapes. A shape that does not fit has its Yosys counts set against the larger boards.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from edgefpga.hw.layers.estimate import PREDICTION_TOLERANCE, prediction_error, prediction_misses

# MLPerf Tiny inference v1.0 (closed division), PYNQ-Z2 at 100 MHz: the published throughput of
# the same shapes by the tools users compare us with
MLPERF_TINY_V1_0 = {
    "resnet8_ref": {"system": "hls4ml RN08 (image classification), PYNQ-Z2", "inferences_per_s": 130.8},
    "mobilenet_v1_025_ref": {"system": "FINN CNV-W1A1 (image classification), PYNQ-Z2; no visual wake words "
                                       "entry on this board", "inferences_per_s": 661.0},
}
# the field's best measured rates on the PYNQ-Z2's own chip (xc7z020): fpgaConvNet in MLPerf Tiny
# inference v1.1 (closed division, INT8, 100-143 MHz) on a ZedBoard; issue 29's anchors
MLPERF_TINY_V1_1_XC7Z020 = {
    "resnet8_ref": {"system": "fpgaConvNet ResNet-8 (image classification, top-1 86.0 %), ZedBoard (xc7z020)",
                    "inferences_per_s": 2431.0},
    "mobilenet_v1_025_ref": {"system": "fpgaConvNet MobileNet-V1 0.25 (visual wake words), ZedBoard (xc7z020)",
                             "inferences_per_s": 105.0},
}
LARGER_BOARDS = ("kv260", "zcu104")


def convert_and_verify(name: str, board: str, out: Path, frames: int | None, jobs: int, reuse: bool) -> dict:
    """Convert and verify (with Yosys) into ``out``; with ``reuse`` (a developer's shortcut, never
    the default: a build of older code would be reported as this commit's), a build folder already
    verified there by this benchmark (its verify.json, with resources, and an intact folder) is read
    instead of made again. Yosys's per-stage cache keeps a fresh run short."""
    from edgefpga.hw.convert import ConvertConfig, convert, load_report
    from edgefpga.models.card import ZOO
    from edgefpga.sim.verify import VERIFY_FILE, VerifyFailed, verify

    previous = out / VERIFY_FILE
    if reuse and previous.is_file():
        result = json.loads(previous.read_text())
        if result.get("integrity", {}).get("ok") and result.get("resources") and result.get("fit") \
                and result.get("rtl", {}).get("n"):
            print(f"[{name} {board}] reusing {previous}", flush=True)
            return {"report": load_report(out), "verify": result, "convert_s": None, "reused": str(previous)}
    from edgefpga.hw.plan import PlanError

    start = time.perf_counter()
    try:
        report = convert(str(ZOO / name), out, ConvertConfig(board=board, progress=False), force=True,
                         log=lambda m: print(f"[{name} {board}] {m}", flush=True))
    except PlanError as refused:
        return {"refused": str(refused), "convert_s": round(time.perf_counter() - start, 1)}
    convert_s = time.perf_counter() - start
    try:
        result = verify(out, limit=frames, progress=False, resources=True, jobs=jobs)
    except VerifyFailed as failed:
        result = failed.result
    return {"report": report, "verify": result, "convert_s": round(convert_s, 1)}


def on_larger_boards(used: dict) -> dict:
    """The same design's Yosys counts against each larger board: whether it fits there as it is
    (a conversion for that board would plan more lanes for its DSPs and clock)."""
    from edgefpga.hw.boards import get_board

    out = {}
    for name in LARGER_BOARDS:
        board = get_board(name)
        available = {"LUT": board.lut, "FF": board.ff, "DSP": board.dsp, "BRAM36": board.bram36}
        share = {k: round(used[k] / available[k], 3) for k in used}
        out[name] = {"share": share, "fits_within_80_percent": all(v <= 0.8 for v in share.values())}
    return out




def summary(name: str, board: str, run: dict) -> dict:
    if "refused" in run:
        return {"board": board, "refused": run["refused"], "convert_s": run["convert_s"],
                "failed_checks": [{"check": "fits", "detail": run["refused"]}]}
    report, result = run["report"], run["verify"]
    rtl, emu, res = result["rtl"], result["emulator"], result["resources"]
    errors = prediction_error(result["fit"]["used"], res["used"])
    off = prediction_misses(result["fit"]["used"], res["used"])
    if off:
        result["failed"] = result["failed"] + [{"check": "prediction", "detail": f"predicted vs Yosys beyond "
                                                f"+-{PREDICTION_TOLERANCE:.0%}: {off}"}]
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
        "fps_clock": "the board's nominal clock, not placed and routed (docs/rtl.md, Timing)",
        "resources": {"used": res["used"], "share": res["share"], "fits_within_80_percent": res["fits"]},
        "predicted": {"used": result["fit"]["used"], "fits_within_80_percent": result["fit"]["fits"],
                      "error_vs_yosys": errors},
        "failed_checks": result["failed"], "convert_s": run["convert_s"], "yosys_s": res["seconds"],
    }
    over = {k: {"used": res["used"][k], "limit": round(res["available"][k] * res["limit_share"], 1)}
            for k, v in res["share"].items() if v > res["limit_share"]}
    if over:
        row["over_80_percent"] = over
    return row


def bench_reference_models(frames: int | None = None, jobs: int = 2, board: str = "pynq-z2", reuse: bool = False) -> dict:
    """Every reference shape on ``board`` (all held-out images unless ``frames``)."""
    from edgefpga.models.reference import REFERENCES

    rows = {}
    for name in REFERENCES:
        run = convert_and_verify(name, board, Path("build") / f"{name}_{board}", frames, jobs, reuse)
        row = summary(name, board, run)
        rows[name] = row
        if "refused" in row:
            # still built, bit-exact and counted where it fits: the smallest board the refusal names
            other = re.search(r"smallest preset board that holds it: ([\w-]+)", row["refused"])
            if other:
                alt = convert_and_verify(name, other.group(1), Path("build") / f"{name}_{other.group(1)}", frames,
                                         jobs, reuse)
                row["on_smallest_board_that_holds_it"] = summary(name, other.group(1), alt)
            continue
        if run.get("reused"):
            row["reused_verify_json"] = run["reused"]
        mlperf = MLPERF_TINY_V1_0.get(name)  # none for a shape of our own (dense_head_ref)
        if mlperf:
            row["mlperf_tiny_v1_0"] = dict(mlperf, note="not like with like: MLPerf Tiny's rate is measured end to "
                                           "end on a board; ours is the accelerator's interval at the nominal clock, "
                                           "a projection")
        if not row["resources"]["fits_within_80_percent"]:
            row["larger_boards"] = on_larger_boards(row["resources"]["used"])
    passed = all(not row["failed_checks"] for row in rows.values())
    return {"board": board, "passed": passed, "note": "RTL bit-exact counts under 10 % idle input and 10 % backpressure; II and "
            "latency exact cycles from Verilator; frame rates at the board's nominal clock (not placed and routed); "
            "predicted: each stage's hardware model (hw/layers); resources: Yosys synth_xilinx count (sum of "
            "per-layer syntheses), fits = every resource within 80 % of the board; larger_boards: the same design's "
            "counts against those boards", "models": rows}
