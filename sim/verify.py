"""``edgefpga verify``: check a build folder and write ``verify.json``.

The emulator check runs the hls4ml C simulation (the bit-accurate golden model of the HLS
design) on held-out images and compares its top-1 with the float ONNX model. The RTL check
compiles the generated Verilog with Verilator (a native harness, sim/harness) and streams the
same images through its AXI-Stream ports with random idle cycles and backpressure, comparing
every output word with the emulator; then it measures latency and initiation interval in exact
cycles at full rate, and (unless skipped) estimates resources with Yosys.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from edgefpga.hw.convert import load_report
from edgefpga.hw.graph import canonical_graph  # noqa: F401  (sets the ONNX IR version qonnx needs)
from edgefpga.hw.hls import Emulator
from edgefpga.hw.images import ImageSet, load_image_set
from edgefpga.hw.onnx_check import ConversionError
from edgefpga.hw.precision import run_logits
from edgefpga.hw.profile import with_outputs
from edgefpga.models.card import InputSpec
from edgefpga.models.metrics import classification_metrics

VERIFY_FILE = "verify.json"


def float_logits(build_dir: Path, pixels: np.ndarray) -> np.ndarray:
    """The float model (raw pixels in, normalization inside) in ONNX Runtime."""
    from qonnx.core.modelwrapper import ModelWrapper

    canonical = ModelWrapper(str(build_dir / "model" / "canonical.onnx"))
    return run_logits(with_outputs(canonical, []), pixels.astype(np.float32))


def verify_emulator(build_dir: Path, images: ImageSet, progress: bool = True) -> tuple[dict, np.ndarray]:
    """Emulator vs float model: top-1 agreement, accuracy of both, largest score difference; and
    the emulator's scores (the golden values for the RTL check)."""
    report = load_report(build_dir)
    start = time.perf_counter()
    emulator = Emulator.load(build_dir / "hls", report["model"]["input"]["shape"])
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = emulator.predict(images.pixels, progress)
    predict_s = time.perf_counter() - start
    reference = float_logits(build_dir, images.pixels)
    result = {"n": len(images), "images": images.source,
              "top1_agreement": float(np.mean(scores.argmax(1) == reference.argmax(1))),
              "disagreements": np.flatnonzero(scores.argmax(1) != reference.argmax(1)).tolist(),
              "max_abs_score_diff": float(np.abs(scores - reference).max()),
              "compile_s": round(compile_s, 1), "seconds_per_image": round(predict_s / len(images), 4)}
    if images.labels is not None:
        classes = len(report["model"]["classes"])
        emu = classification_metrics(images.labels, scores.argmax(1), classes)
        flt = classification_metrics(images.labels, reference.argmax(1), classes)
        result.update({"accuracy": emu["accuracy"], "float_accuracy": flt["accuracy"],
                       "accuracy_drop": round(flt["accuracy"] - emu["accuracy"], 6),
                       "balanced_accuracy": emu["balanced_accuracy"],
                       "float_balanced_accuracy": flt["balanced_accuracy"]})
    return result, scores


def emulator_integers(scores: np.ndarray, frac: int) -> np.ndarray:
    """The emulator's float scores as the integers the output stream carries (exact: they lie on the grid)."""
    ints = np.round(scores * 2.0 ** frac)
    if not np.array_equal(ints, scores * 2.0 ** frac):
        raise ConversionError(f"emulator scores are not on the output type's grid (2^-{frac})")
    return ints.astype(np.int64)


TIMING_FRAMES = 6


def verify_rtl(build_dir: Path, images: ImageSet, emulator_scores: np.ndarray, idle: int = 10, stall: int = 10,
               seed: int = 1) -> dict:
    """Bit-exactness of the RTL against the emulator on every image under random idle cycles and
    backpressure, then exact latency and interval at full rate."""
    from .rtl_harness import build_harness, run_harness, to_signed

    manifest = json.loads((build_dir / "rtl" / "manifest.json").read_text())
    out = manifest["output"]
    work = build_dir / "sim"
    program, build_s = build_harness(build_dir / "rtl", work)
    stress = run_harness(program, images.pixels, out["outputs"], work, idle, stall, seed)
    rtl = to_signed(stress.scores, out["tdata_bits"])
    expected = emulator_integers(emulator_scores, out["frac"])
    exact = (rtl == expected).all(axis=1)
    timing = run_harness(program, images.pixels[:TIMING_FRAMES], out["outputs"], work)
    report = load_report(build_dir)
    roofline = report["estimate"]["roofline_cycles"]
    latency, interval = int(np.max(timing.latency_cycles)), int(np.max(timing.interval_cycles))
    return {"n": len(images), "bit_exact_frames": int(exact.sum()), "mismatched_frames": np.flatnonzero(~exact).tolist()[:20],
            "framing_errors": stress.framing_errors, "idle_percent": idle, "backpressure_percent": stall, "seed": seed,
            "latency_cycles": latency, "latency_single_frame_cycles": int(timing.latency_cycles[0]),
            "ii_cycles": interval, "roofline_cycles": roofline, "timing_frames": len(timing.first_in),
            "ii_over_roofline": round(interval / roofline, 3), "latency_over_roofline": round(latency / roofline, 3),
            "multipliers": report.get("rtl", {}).get("multipliers"),
            "fps_at_clock": round(report["board"]["clock_mhz"] * 1e6 / interval, 1),
            "verilator_build_s": round(build_s, 1), "simulated_cycles": int(stress.last_out[-1]),
            "simulated_cycles_per_s": round(stress.last_out[-1] / stress.seconds)}


def verify(build_dir: str | Path, images: str | None = None, limit: int | None = None,
           emulator_only: bool = False, progress: bool = True, resources: bool = False, jobs: int = 1) -> dict:
    """Run the checks and write ``<build_dir>/verify.json``; return its content. ``jobs``: Yosys
    processes at a time for the resource estimate."""
    build_dir = Path(build_dir)
    report = load_report(build_dir)
    if not emulator_only and not (build_dir / "rtl" / "manifest.json").is_file():
        raise ConversionError(f"{build_dir}: no RTL to check (rtl/manifest.json is missing: convert it again "
                              "with this version); run with --emulator-only to check the emulator alone")
    source = images or ("elpv:test" if report["model"].get("dataset") == "ELPV" else None)
    if source is None:
        raise ConversionError(f"{build_dir}: pass --images (a folder of images or an .npz) to verify against")
    spec = InputSpec.from_dict(report["model"]["input"], str(build_dir / "report.json"))
    image_set = load_image_set(source, spec, report["model"]["classes"]).take(limit)
    emulator, scores = verify_emulator(build_dir, image_set, progress)
    result = {"build": str(build_dir), "emulator": emulator}
    if not emulator_only:
        result["rtl"] = verify_rtl(build_dir, image_set, scores)
        if resources:
            from .resources import yosys_estimate

            result["resources"] = yosys_estimate(build_dir / "rtl", report["board"], jobs=jobs)
    (build_dir / VERIFY_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result
