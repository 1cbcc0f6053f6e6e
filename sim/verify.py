"""``edgefpga verify``: check a build folder against the float model and write ``verify.json``.

The emulator check runs the hls4ml C simulation (the bit-accurate golden model of the HLS
design) on held-out images and compares its top-1 with the float ONNX model; the RTL check
(cocotb + Verilator against the emulator) needs the ``rtl/`` folder of the open RTL flow.
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


def verify_emulator(build_dir: Path, images: ImageSet, progress: bool = True) -> dict:
    """Emulator vs float model: top-1 agreement, accuracy of both, largest score difference."""
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
    return result


def verify(build_dir: str | Path, images: str | None = None, limit: int | None = None,
           emulator_only: bool = False, progress: bool = True) -> dict:
    """Run the checks and write ``<build_dir>/verify.json``; return its content."""
    build_dir = Path(build_dir)
    report = load_report(build_dir)
    if not emulator_only and not (build_dir / "rtl" / "manifest.json").is_file():
        raise ConversionError(f"{build_dir}: no RTL to check (rtl/manifest.json is missing: the open RTL "
                              "generator has not written this build); run with --emulator-only")
    source = images or ("elpv:test" if report["model"].get("dataset") == "ELPV" else None)
    if source is None:
        raise ConversionError(f"{build_dir}: pass --images (a folder of images or an .npz) to verify against")
    spec = InputSpec.from_dict(report["model"]["input"], str(build_dir / "report.json"))
    image_set = load_image_set(source, spec, report["model"]["classes"]).take(limit)
    result = {"build": str(build_dir), "emulator": verify_emulator(build_dir, image_set, progress)}
    (build_dir / VERIFY_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result
