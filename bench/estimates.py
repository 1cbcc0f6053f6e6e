"""The hardware models' whole-design resource prediction (hw/layers, no Yosys) against Yosys's count
(``edgefpga verify --resources``: synth_xilinx, one synthesis per distinct stage instance, summed)
on the designs issue 28 names besides the reference shapes and the shipped ELPV build (those are
bench/reference_models.py's and bench/board.py's): the module detector (models/zoo/
elpv_modules_detect) and the four feature nets of the test suite (tests/torch_nets.py, exported by
torch.onnx.export and calibrated on ELPV training cells as the suite does it), each converted for a
PYNQ-Z2 -> bench/results/estimates.json.

- Per design and budget (LUT, FF, DSP, BRAM36): predicted, counted, and the relative error.
- Check (exit 1 when it fails): every budget of every design within
  hw/layers/estimate.py ``PREDICTION_TOLERANCE`` (10 %), or within its absolute floor where the
  count is too small for a percentage (``DESIGN_SMALL``), and every design within 80 % of the
  board by Yosys.

Run: ``.venv/bin/python bench/estimates.py`` (or ``python bench/run.py estimates``); about 10-20
minutes cold, seconds on a warm Yosys cache.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DETECTOR_BUILD = ROOT / "build" / "elpv_modules_detect"
CALIBRATION_CELLS = 300  # ELPV training cells, seed 0, as tests/hw/test_features.py draws them
JOBS = 2


def feature_builds(folder: Path) -> dict[str, Path]:
    """The test suite's feature nets, each converted into ``folder/<name>/build``."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from torch_nets import FEATURE_NETS, convert_feature_net

    from edgefpga.models import elpv

    data = elpv.load()
    calib = np.random.default_rng(0).choice(elpv.split(data).train, CALIBRATION_CELLS, replace=False)
    builds = {}
    for name in FEATURE_NETS:
        (folder / name).mkdir(parents=True)
        print(f"[estimates] converting {name}", flush=True)
        builds[name] = convert_feature_net(name, data.images[calib], folder / name)
    return builds


def compare(build: Path) -> dict:
    """One design: the prediction and the Yosys count per board budget, and the misses."""
    from edgefpga.hw.boards import get_board
    from edgefpga.hw.layers.estimate import design_resources, prediction_error, prediction_misses
    from edgefpga.sim.resources import yosys_estimate

    manifest = json.loads((build / "rtl" / "manifest.json").read_text())
    predicted = design_resources(manifest).board_use()
    start = time.perf_counter()
    counted = yosys_estimate(build / "rtl", get_board("pynq-z2").to_dict(), jobs=JOBS)
    return {"stages": len(manifest["stages"]), "predicted": predicted, "yosys": counted["used"],
            "yosys_share": counted["share"], "fits_within_80_percent": counted["fits"],
            "error": prediction_error(predicted, counted["used"]),
            "misses": prediction_misses(predicted, counted["used"]), "yosys_s": round(time.perf_counter() - start, 1)}


def bench_estimates() -> dict:
    from edgefpga.hw.convert import ensure_converted
    from edgefpga.hw.layers.estimate import DESIGN_SMALL, PREDICTION_TOLERANCE
    from edgefpga.models.card import ZOO

    designs = {"elpv_modules_detect": ensure_converted(DETECTOR_BUILD, ZOO / "elpv_modules_detect")}
    with tempfile.TemporaryDirectory(prefix="edgefpga-estimates-") as tmp:
        designs.update(feature_builds(Path(tmp)))
        rows = {}
        for name, build in designs.items():
            print(f"[estimates] {name}: Yosys", flush=True)
            rows[name] = compare(build)
    failed = [f"{name}: {row['misses']}" for name, row in rows.items() if row["misses"]]
    failed += [f"{name}: over 80 % of the PYNQ-Z2 by Yosys ({row['yosys_share']})" for name, row in rows.items()
               if not row["fits_within_80_percent"]]
    return {"board": "pynq-z2", "designs": rows, "tolerance": PREDICTION_TOLERANCE,
            "small_counts": {k: {"below": small, "absolute_error": err} for k, (small, err) in DESIGN_SMALL.items()},
            "method": "predicted: hw/layers' hardware models summed over the manifest's stages and the two AXI-Stream "
                      "adapters; yosys: synth_xilinx -family xc7, one synthesis per distinct instance, summed "
                      "(edgefpga verify --resources)",
            "failed": failed, "passed": not failed}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import main

    sys.exit(main(["estimates"]))
