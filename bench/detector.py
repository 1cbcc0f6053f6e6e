"""The detector (models/zoo/elpv_modules_detect) on held-out EL module images, against the grid-crop
mode of the shipped binary model on the same images, in one run -> bench/results/detector.json.

- Images: ``modules:test:200`` (models/modules.py, seed 0): module images composed from ELPV's
  test-split cells, which neither model was trained on.
- Position accuracy: a detection counts when it lies within half a cell of a defective cell's
  centre (both axes), each defective cell once (models/detect.py ``match``); precision and recall
  of defective cells over all images. The detector: its score map decoded at its card's threshold
  (chosen on the validation modules: ``output.threshold``). The grid-crop mode (at 0.5, the binary
  model's calibrated decision): the inspection node's own split (``grid_cells``, the
  module's true rows x cols given to it, as a user would set ``grid_rows``/``grid_cols``), each
  crop classified by ``elpv_defect``; a defective crop is a detection at the crop's centre. Both
  through the Engine on ONNX Runtime (the float models), so the comparison is of the models.
- RTL: ``edgefpga verify`` of the detector's build on the same images: the agreement bar on all of
  them (integer model, whole maps), the hls4ml emulator and the Verilator RTL bit for bit on
  ``RTL_SAMPLE`` of them; exact cycles per image (interval and latency, frames back to back) and
  the projected frame rate at the PYNQ-Z2 clock (hw/boards.py).
- Checks (exit 1 when one fails): the RTL bit-exact on every image it ran (at least 50), and the
  detector's precision and recall each at least ``FLOOR``.

Run: ``.venv/bin/python bench/detector.py`` (or ``python bench/run.py detector``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "elpv_modules_detect"
IMAGES = "modules:test:200"
RTL_SAMPLE = 64
FLOOR = 0.5  # a detector that finds fewer than half the defective cells, or is wrong half the time, fails
THRESHOLD = 0.5  # the binary model's (its logit bias was calibrated for it)


def detector_counts(found, model: Path, threshold: float) -> tuple[list, float]:
    """(tp, fp, fn) per module of the detector through the Engine, and its seconds per image."""
    from edgefpga.models.detect import match
    from edgefpga.runtime import open as open_engine

    with open_engine(model, backend="onnx", defect_threshold=threshold) as engine:
        start = time.perf_counter()
        results = engine.infer([m.image for m in found])
        seconds = (time.perf_counter() - start) / len(found)
    return [match([(d["x"], d["y"]) for d in r.detections], m.defect_centres, m.cell)
            for r, m in zip(results, found)], seconds


def grid_crop_counts(found, model: Path) -> tuple[list, float]:
    """(tp, fp, fn) per module of the node's grid-crop mode: every crop through the binary model."""
    from edgefpga.models.detect import match
    from edgefpga.ros_nodes.images import grid_cells
    from edgefpga.runtime import open as open_engine

    counts = []
    with open_engine(model, backend="onnx", defect_threshold=THRESHOLD) as engine:
        start = time.perf_counter()
        for m in found:
            cells = grid_cells(m.image, m.rows, m.cols)
            results = engine.infer([crop for crop, _ in cells])
            hits = [(x + w / 2, y + h / 2) for r, (_, (x, y, w, h)) in zip(results, cells) if r.defective]
            counts.append(match(hits, m.defect_centres, m.cell))
        seconds = (time.perf_counter() - start) / len(found)
    return counts, seconds


def bench_detector() -> dict:
    from edgefpga.hw.convert import ensure_converted
    from edgefpga.models import modules
    from edgefpga.models.card import ZOO, load_card
    from edgefpga.models.detect import detection_metrics
    from edgefpga.sim.verify import VerifyFailed, verify

    detector, binary = ZOO / "elpv_modules_detect", ZOO / "elpv_defect"
    found = modules.select(IMAGES)
    threshold = load_card(detector).raw["output"]["threshold"]  # chosen on the validation modules
    det_counts, det_s = detector_counts(found, detector, threshold)
    grid_counts, grid_s = grid_crop_counts(found, binary)
    det, grid = detection_metrics(det_counts), detection_metrics(grid_counts)
    build = ensure_converted(BUILD, detector)
    try:
        checked = verify(build, images=IMAGES, sample=RTL_SAMPLE, progress=False)
    except VerifyFailed as exc:
        checked = exc.result
    rtl, emu = checked.get("rtl", {}), checked["emulator"]
    card = load_card(detector).raw
    result = {
        "images": IMAGES, "modules": len(found), "defective_cells": int(sum(m.defective.sum() for m in found)),
        "cells": int(sum(m.rows * m.cols for m in found)),
        "hit_rule": "within half a cell of a defective cell's centre on both axes, each cell once",
        "detector": {"model": "elpv_modules_detect", "backend": "onnx", "threshold": threshold, **det, "seconds_per_image": round(det_s, 4),
                     "input": card["input"]["shape"], "output_stride": card["output"]["stride"],
                     "macs": card["macs"], "params": card["params"]},
        "grid_crop": {"model": "elpv_defect", "backend": "onnx", "threshold": THRESHOLD, **grid, "seconds_per_image": round(grid_s, 4),
                      "grid": "each module's true rows x cols (the node's grid_rows/grid_cols)",
                      "engine_calls_per_image": "one per cell", "macs_per_image": "cells x " + str(
                          load_card(binary).raw["macs"])},
        "verify": {"emulator_top1_cell_agreement": emu["top1_agreement"], "images": emu["n"],
                   "emulator_bit_exact_images": emu.get("integer_model_bit_exact_images"),
                   "rtl_images": rtl.get("n"), "rtl_bit_exact_images": rtl.get("bit_exact_frames"),
                   "framing_errors": rtl.get("framing_errors"), "failed": checked.get("failed", [])},
        "cycles_per_image": {"ii_cycles": rtl.get("ii_cycles"), "latency_cycles": rtl.get("latency_cycles"),
                             "planned_ii_cycles": rtl.get("planned_ii_cycles"), "source": "Verilator RTL, exact"},
        "pynq_z2": {"clock_mhz": checked_clock(build), "projected_fps": rtl.get("fps_at_clock")},
    }
    checks = [
        {"check": "rtl_bit_exact", "passed": bool(rtl.get("n", 0) >= 50 and rtl.get("bit_exact_frames") == rtl.get("n")
                                                   and not rtl.get("framing_errors") and not checked.get("failed")),
         "detail": f"{rtl.get('bit_exact_frames')} of {rtl.get('n')} module images bit-exact (at least 50 needed); "
                   f"verify failed checks: {[c['check'] for c in checked.get('failed', [])]}"},
        {"check": "detector_floor", "passed": bool(det["precision"] >= FLOOR and det["recall"] >= FLOOR),
         "detail": f"precision {det['precision']}, recall {det['recall']} (each at least {FLOOR})"},
    ]
    result["checks"] = checks
    result["passed"] = all(c["passed"] for c in checks)
    return result


def checked_clock(build: Path) -> float:
    import json

    return json.loads((build / "report.json").read_text())["board"]["clock_mhz"]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import main

    sys.exit(main(["detector"]))
