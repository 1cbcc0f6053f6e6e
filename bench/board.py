"""The shipped model on a PYNQ-Z2, projected from exact RTL cycles, against the CPUs a user
would run it on instead -> bench/results/board.json. All in one run, from the shipped model.

- Verify: `edgefpga verify --resources` on every one of the 654 test cells (the agreement bar,
  the emulator and the RTL bit for bit, the Yosys estimate within 80 % of the board); the run
  exits non-zero when a check fails. (The test suite checks a sample: tests/conftest.py.)
- Board: frames/s and latency at the board clock (exact cycles of frames back to back in the
  RTL, `edgefpga.sim.rtl_harness.project_board`), the Yosys resource estimate.
- This CPU: bare ONNX Runtime on the float model (normalized input ready, no Engine), warmed by
  one call: one thread and all threads, one image per call (a camera) and 64 per call (best case).
- The board's own CPU (Cortex-A9, 650 MHz, 2 cores): not measurable here, so estimated as a
  bound: NEON does at most 2 single-precision multiply-accumulates per cycle and core, so one
  core runs at most 1.3 GMAC/s; images/s <= 1.3e9 / MACs per image. Real kernels reach a
  fraction of the peak: ``a9_realistic`` assumes 30 % of it on both cores.
- Energy per inference on the board: board power / frames per second. The board power is
  MLPerf Tiny v1.0's measurement of a PYNQ-Z2 running hls4ml's ResNet-8 (1.60 W, the whole
  board: PS7 running the driver, PL, regulators), taken as the power of this design too (the
  same board and processing system, a PL design of similar size: see `pl_dynamic_w` for this
  design's own PL share, estimated from the Yosys counts with the per-resource coefficients in
  PL_COEFFICIENTS_W_PER_MHZ, typical 7-series values at 12.5 % toggle, a method, not a
  measurement). Next to it, MLPerf Tiny's measured energy per inference of that ResNet-8.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

BUILD = Path("build/elpv_defect")
# MLPerf Tiny inference v1.0, open division, hls4ml RN08 (image classification) on a PYNQ-Z2:
# mlcommons/tiny_results_v1.0, open/hls4ml/results/pynq-z2/ic/RN08/power/results.txt (median window)
MLPERF_RN08_PYNQ_Z2 = {"inferences_per_s": 130.801, "energy_uj_per_inference": 12266.036, "board_power_w": 1.604,
                       "source": "mlcommons/tiny_results_v1.0 open/hls4ml/results/pynq-z2/ic/RN08/power/results.txt"}
A9 = {"clock_hz": 650e6, "cores": 2, "peak_macs_per_cycle_per_core": 2, "realistic_fraction": 0.3}
# dynamic power per used resource per MHz of clock, 7-series, 12.5 % toggle (typical power-estimator values)
PL_COEFFICIENTS_W_PER_MHZ = {"LUT": 0.10e-6, "FF": 0.02e-6, "DSP": 1.5e-6, "BRAM36": 10e-6}


def onnx_rates(model_path: Path, inputs: np.ndarray) -> dict:
    """Bare ONNX Runtime, warmed: images/s and per-image ms, one thread and all threads, one image
    per call and 64 per call (the model's batch dimension permitting)."""
    import onnxruntime as ort

    out = {}
    for threads in (1, 0):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        session.run(None, {name: inputs[:1]})
        times = []
        for i in range(len(inputs)):
            start = time.perf_counter()
            session.run(None, {name: inputs[i:i + 1]})
            times.append(time.perf_counter() - start)
        row = {"one_per_call_images_per_s": round(len(times) / sum(times), 1),
               "one_per_call_ms_median": round(float(np.median(times)) * 1e3, 4)}
        if session.get_inputs()[0].shape[0] != 1:
            start = time.perf_counter()
            for i in range(0, len(inputs), 64):
                session.run(None, {name: inputs[i:i + 64]})
            row["batch_64_images_per_s"] = round(len(inputs) / (time.perf_counter() - start), 1)
        out["onnxruntime_1_thread" if threads == 1 else "onnxruntime_all_threads"] = row
    return out


def a9_estimate(macs: int) -> dict:
    peak = A9["clock_hz"] * A9["peak_macs_per_cycle_per_core"]
    return {"bound_images_per_s_one_core": round(peak / macs, 1),
            "a9_realistic_images_per_s": round(peak * A9["cores"] * A9["realistic_fraction"] / macs, 1),
            "method": f"Cortex-A9 {A9['clock_hz'] / 1e6:g} MHz, NEON peak {A9['peak_macs_per_cycle_per_core']} fp32 "
                      f"MAC/cycle/core; realistic: {A9['realistic_fraction']:.0%} of peak on {A9['cores']} cores; "
                      f"{macs:,} MACs per image"}


def energy(fps: float, clock_mhz: float, used: dict) -> dict:
    pl = sum(used.get(k, 0) * c * clock_mhz for k, c in PL_COEFFICIENTS_W_PER_MHZ.items())
    board_w = MLPERF_RN08_PYNQ_Z2["board_power_w"]
    uj = board_w / fps * 1e6
    return {"board_power_w": board_w, "energy_uj_per_inference": round(uj, 1), "pl_dynamic_w": round(pl, 3),
            "mlperf_tiny_rn08_uj_per_inference": MLPERF_RN08_PYNQ_Z2["energy_uj_per_inference"],
            "ratio_mlperf_over_ours": round(MLPERF_RN08_PYNQ_Z2["energy_uj_per_inference"] / uj, 1),
            "method": "board power (MLPerf Tiny's measured PYNQ-Z2 power) / frames per second; pl_dynamic_w: "
                      "Yosys counts x typical 7-series per-resource coefficients x clock (an estimate)"}


def verify_summary(result: dict) -> dict:
    """What the README quotes from verify.json: bit-exact counts, agreement, failed checks."""
    emu, rtl = result["emulator"], result["rtl"]
    return {"images": emu["n"], "top1_agreement_with_float": emu["top1_agreement"], "accuracy": emu.get("accuracy"),
            "float_accuracy": emu.get("float_accuracy"), "emulator_bit_exact": emu.get("integer_model_bit_exact_images"),
            "rtl_frames": rtl.get("n"), "rtl_bit_exact": rtl.get("bit_exact_frames"), "ii_cycles": rtl.get("ii_cycles"),
            "latency_cycles": rtl.get("latency_cycles"), "failed_checks": result["failed"]}


def bench_board(jobs: int = 2) -> dict:
    from edgefpga.hw.convert import ensure_converted, load_report
    from edgefpga.hw.layers.estimate import prediction_error, prediction_misses
    from edgefpga.models import elpv
    from edgefpga.models.card import ZOO, load_card
    from edgefpga.models.preprocess import normalize, resize_batch
    from edgefpga.sim.rtl_harness import project_board
    from edgefpga.sim.verify import VerifyFailed, verify

    card = load_card(ZOO / "elpv_defect")
    build = ensure_converted(BUILD, ZOO / "elpv_defect")
    report = load_report(build)
    data = elpv.load()
    pixels = resize_batch(data.images[elpv.subset("test", data)], card.input)
    try:  # every check of `edgefpga verify --resources` on all 654 test cells (the tests take a sample)
        checked = verify(build, progress=False, resources=True, jobs=jobs)
    except VerifyFailed as failed:
        checked = failed.result
    resources = checked["resources"]
    predicted = checked["fit"]["used"]  # the hardware models' (hw/layers), against Yosys's count
    misses = prediction_misses(predicted, resources["used"])
    projection = project_board(build, pixels[:6])
    cpu = onnx_rates(card.model_path, normalize(pixels, card.input))
    best_cpu = max(max(v for k, v in row.items() if k.endswith("images_per_s")) for row in cpu.values())
    a9 = a9_estimate(card.raw["macs"])
    return {
        "model": card.name, "board": report["board"]["name"], "verify": verify_summary(checked),
        "passed": not checked["failed"] and not misses, "projection": projection,
        "resources": {k: resources[k] for k in ("used", "share", "fits", "limit_share", "method")},
        "predicted": {"used": predicted, "error_vs_yosys": prediction_error(predicted, resources["used"]),
                      "misses": misses},
        "cpu_this_machine": cpu, "cpu_board_a9_estimate": a9,
        "ratios": {"board_vs_onnxruntime_1_thread_one_per_call": round(
                       projection["fps"] / cpu["onnxruntime_1_thread"]["one_per_call_images_per_s"], 2),
                   "board_vs_best_cpu_here": round(projection["fps"] / best_cpu, 2),
                   "board_vs_a9_realistic": round(projection["fps"] / a9["a9_realistic_images_per_s"], 1)},
        "energy": energy(projection["fps"], projection["clock_mhz"], resources["used"]),
        "mlperf_tiny_v1_0_rn08_pynq_z2": MLPERF_RN08_PYNQ_Z2,
    }
