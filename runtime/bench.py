"""``edgefpga bench``: every backend on the same ELPV test cells in one run -> runtime.json.

Per backend: images/s for one batched call, and per-image latency (median, p99) for calls of one
image each, as a camera delivers them. The board is projected from exact RTL cycle counts (the
initiation interval of frames back to back at the board clock), and compared with ONNX Runtime
on this CPU in the same run: ratios, not seconds, are what carry over between machines.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from edgefpga.models.card import ZOO

from .engine import Engine, open_engine

SIM_NOTE = "simulation on this CPU, not board speed"
NOTES = {"onnx": "float model, ONNX Runtime on this CPU (the baseline)", "emulator": f"hls4ml C-sim; {SIM_NOTE}",
         "rtl": f"Verilator; {SIM_NOTE}", "pynq": f"pynq driver on the simulated PS-PL (cocotb); {SIM_NOTE}"}


SHIPPED_MODEL = "elpv_defect"


def ensure_build(model: str | Path, progress: bool) -> Path:
    """The build folder to measure, with the shipped model converted into it when needed."""
    build = Path(model)
    reason = stale_reason(build)
    if reason:
        from edgefpga.hw.convert import ConvertConfig, convert  # hls4ml: heavy, only when converting

        print(f"{build}: {reason}; converting the shipped model into it (about 2 minutes)")
        convert(str(ZOO / SHIPPED_MODEL), build, ConvertConfig(progress=progress), force=True,
                log=print if progress else (lambda _m: None))
    return build


def stale_reason(build: Path) -> str | None:
    """Why ``build`` must be (re)converted: missing, or converted from an earlier shipped model's
    weights (after an update of the zoo). A build of any other model is the user's and is kept."""
    report = build / "report.json"
    if not report.is_file():
        return "no build folder"
    try:
        name = json.loads(report.read_text())["model"].get("name")
    except (json.JSONDecodeError, KeyError, AttributeError):
        return None
    source, shipped = build / "model" / "source.onnx", ZOO / SHIPPED_MODEL / "model.onnx"
    if name == SHIPPED_MODEL and source.is_file() and source.read_bytes() != shipped.read_bytes():
        return f"built from other weights than the shipped {shipped}"
    return None


def time_engine(engine: Engine, images: list) -> dict:
    """Throughput of one batched call, then per-image latency of single-image calls."""
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


def board_projection(build: Path, pixels: np.ndarray, clock_mhz: float) -> dict:
    """Exact cycles of frames back to back in the RTL harness, at the board clock."""
    from edgefpga.sim.rtl_harness import ensure_harness, run_harness

    manifest = json.loads((build / "rtl" / "manifest.json").read_text())
    program, _ = ensure_harness(build / "rtl", build / "sim")
    with tempfile.TemporaryDirectory() as work:
        run = run_harness(program, pixels, manifest["output"]["outputs"], Path(work))
    ii = int(np.max(run.interval_cycles))
    latency = int(np.max(run.latency_cycles))
    return {"clock_mhz": clock_mhz, "ii_cycles": ii, "latency_cycles": latency, "frames": len(pixels),
            "fps": round(clock_mhz * 1e6 / ii, 1), "latency_us": round(latency / clock_mhz, 1)}


def bench_runtime(model: str | Path = "build/elpv_defect", n_images: int = 32, out: Path | None = None,
                  pynq_sim: bool = True, progress: bool = True) -> dict:
    """Measure every backend on the first ``n_images`` ELPV test cells; write ``out`` (JSON)."""
    from edgefpga.models import elpv

    build = ensure_build(model, progress)
    data = elpv.load()
    images = list(data.images[elpv.subset("test", data)[:n_images]])
    rows, scores = {}, {}
    for name in ("onnx", "emulator", "rtl"):
        start = time.perf_counter()
        with open_engine(build, backend=name) as engine:
            opened = time.perf_counter() - start
            timing = time_engine(engine, images)
            pixels = engine.preprocess(images)[0]
        scores[name] = timing.pop("scores")
        rows[name] = {**timing, "open_s": round(opened, 2), "note": NOTES[name]}
        if progress:
            print(f"{name}: {rows[name]['images_per_s']} images/s")
    if pynq_sim:
        rows["pynq"], scores["pynq"] = pynq_sim_row(build, images[: min(8, n_images)])
    clock = json.loads((build / "report.json").read_text())["board"]["clock_mhz"]
    projection = board_projection(build, pixels[:6], clock)
    projection["ratio_vs_onnx_cpu"] = round(projection["fps"] / rows["onnx"]["images_per_s"], 2)
    result = {"model": str(build), "n_images": len(images), "backends": rows, "projection": projection,
              "agreement": {"rtl_equals_emulator": bool(np.array_equal(scores["rtl"], scores["emulator"])),
                            "pynq_equals_rtl": (bool(np.array_equal(scores["pynq"], scores["rtl"][:len(scores["pynq"])]))
                                                if "pynq" in scores else None),
                            "top1_rtl_vs_onnx": float(np.mean(scores["rtl"].argmax(1) == scores["onnx"].argmax(1)))},
              "machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": os.cpu_count()}}
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def pynq_sim_row(build: Path, images: list) -> tuple[dict, np.ndarray]:
    """The pynq backend on the simulated PS-PL: one batched call (its time is simulation time)."""
    from .pynq_simulation import run_pynq_backend

    with tempfile.TemporaryDirectory() as work:
        result = run_pynq_backend(build, np.stack(images), Path(work))
    per_image_ms = result["seconds"] * 1e3 / len(images)
    row = {"images_per_s": round(len(images) / result["seconds"], 2),
           "latency_ms": {"median": round(per_image_ms, 3), "p99": round(per_image_ms, 3)},
           "n_images": len(images), "note": NOTES["pynq"] + "; one batched call, latency = its time per image"}
    return row, np.array(result["scores"])
