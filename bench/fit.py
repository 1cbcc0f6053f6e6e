"""Fit or refuse, measured: `python bench/run.py fit` writes bench/results/fit.json.

A 224x224 ResNet-18 (torchvision's layout, random weights: models/reference.py ResNet18, 11.7 M
parameters) exported with torch.onnx.export and given to `edgefpga convert --board pynq-z2`
as a user would: it must be refused, exit 2, in one line naming the resource, in under a
minute (before any calibration or precision search). The check fails otherwise.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

REFUSAL_LIMIT_S = 60.0


def export_resnet18(folder: Path) -> Path:
    import torch

    from edgefpga.models.export import export_onnx
    from edgefpga.models.reference import ResNet18

    torch.manual_seed(0)
    model = ResNet18().eval()
    return export_onnx(model, (3, 224, 224), folder / "resnet18.onnx")


def bench_fit() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_resnet18(Path(tmp))
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "edgefpga.cli", "convert", str(onnx_path), "--board", "pynq-z2",
                              "--out", str(Path(tmp) / "build"), "--quiet"], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        left_behind = (Path(tmp) / "build").exists()
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    message = lines[-1] if lines else ""
    checks = {"exit_2": run.returncode == 2, "one_line": len(lines) == 1, "names_bram": "BRAM36" in message,
              "under_a_minute": seconds < REFUSAL_LIMIT_S, "nothing_left_behind": not left_behind}
    return {"resnet18_224_pynq_z2": {"exit": run.returncode, "seconds": round(seconds, 1), "message": message,
                                     "checks": checks},
            "passed": all(checks.values())}
