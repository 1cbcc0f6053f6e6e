"""Every runtime backend on the same ELPV test cells in one run -> bench/results/runtime.json.

Per backend: images/s of one batched call, and per-image latency (median, p99) of calls of one
image each, as a camera delivers them; the engines are warmed by one call first. Simulation
backends run on this CPU: their speed is not the board's (that is bench/board.py's projection).
Also whether the backends agree: rtl == emulator bit for bit, pynq (simulated PS-PL) == rtl.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

SIM_NOTE = "simulation on this CPU, not board speed"
NOTES = {"onnx": "float model, ONNX Runtime on this CPU", "emulator": f"hls4ml C-sim; {SIM_NOTE}",
         "rtl": f"Verilator; {SIM_NOTE}", "pynq": f"pynq driver on the simulated PS-PL (cocotb); {SIM_NOTE}"}


def time_engine(engine, images: list) -> dict:
    """One warm-up call, the throughput of one batched call, then single-image latencies."""
    engine.infer(images[0])
    start = time.perf_counter()
    batch = engine.infer(images)
    batch_s = time.perf_counter() - start
    singles = []
    for image in images:
        start = time.perf_counter()
        engine.infer(image)
        singles.append((time.perf_counter() - start) * 1e3)
    return {"images_per_s": round(len(images) / batch_s, 2),
            "latency_ms": {"median": round(float(np.median(singles)), 3), "p99": round(float(np.percentile(singles, 99)), 3)},
            "scores": np.array([r.scores for r in batch])}


def pynq_sim_row(build: Path, images: list) -> tuple[dict, np.ndarray]:
    """The pynq backend on the simulated PS-PL: one batched call (its time is simulation time)."""
    from edgefpga.runtime.pynq_simulation import run_pynq_backend

    with tempfile.TemporaryDirectory() as work:
        result = run_pynq_backend(build, np.stack(images), Path(work))
    per_image_ms = result["seconds"] * 1e3 / len(images)
    row = {"images_per_s": round(len(images) / result["seconds"], 2),
           "latency_ms": {"median": round(per_image_ms, 3), "p99": round(per_image_ms, 3)},
           "n_images": len(images), "note": NOTES["pynq"] + "; one batched call, latency = its time per image"}
    return row, np.array(result["scores"])


def bench_backends(build: Path, n_images: int = 32, pynq_sim: bool = True) -> dict:
    from edgefpga.models import elpv
    from edgefpga.runtime import open as open_engine

    data = elpv.load()
    images = list(data.images[elpv.subset("test", data)[:n_images]])
    rows, scores = {}, {}
    for name in ("onnx", "emulator", "rtl"):
        start = time.perf_counter()
        with open_engine(build, backend=name) as engine:
            opened = time.perf_counter() - start
            timing = time_engine(engine, images)
        scores[name] = timing.pop("scores")
        rows[name] = {**timing, "open_s": round(opened, 2), "note": NOTES[name]}
        print(f"runtime: {name} {rows[name]['images_per_s']} images/s", flush=True)
    if pynq_sim:
        rows["pynq"], scores["pynq"] = pynq_sim_row(build, images[: min(8, n_images)])
    return {"model": str(build), "n_images": len(images), "backends": rows, "agreement": {
        "rtl_equals_emulator": bool(np.array_equal(scores["rtl"], scores["emulator"])),
        "pynq_equals_rtl": (bool(np.array_equal(scores["pynq"], scores["rtl"][:len(scores["pynq"])]))
                            if "pynq" in scores else None),
        "top1_rtl_vs_onnx": float(np.mean(scores["rtl"].argmax(1) == scores["onnx"].argmax(1)))}}
