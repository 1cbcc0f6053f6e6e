"""Benchmarks: each writes bench/results/<name>.json. Not tests: numbers on a shared machine move.

Run with ``make bench``. Each benchmark measures against a baseline in the same run and reports
the ratio, so results from different machines or days are compared by ratio, not by seconds.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ZOO_MODEL = Path(__file__).resolve().parent.parent / "models" / "zoo" / "elpv_defect"


def _percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"median_ms": round(float(np.median(ms)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4)}


def _session(card, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(card.model_path), options, providers=["CPUExecutionProvider"])


def _time_each(fn, items, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        for item in items:
            t0 = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - t0)
    return _percentiles(times) | {"images_per_s": round(len(times) / sum(times), 1)}


def bench_cpu_inference(model_dir: Path = ZOO_MODEL, repeats: int = 3) -> dict:
    """Per-image latency and throughput of the float model on this CPU with ONNX Runtime (the
    runtime's `onnx` backend, and the CPU baseline the FPGA is compared with), one frame at a
    time as a camera delivers them. Baseline in the same run: ONNX Runtime on one thread."""
    from edgefpga.models import elpv
    from edgefpga.models.card import load_card
    from edgefpga.models.preprocess import preprocess

    card = load_card(model_dir)
    data = elpv.load()
    images = data.images[elpv.subset("test", data)]
    inputs = [preprocess(img, card.input) for img in images]
    results = {"preprocess_opencv": _time_each(lambda img: preprocess(img, card.input), images, repeats)}
    for threads in (1, 0):
        session = _session(card, threads)
        name = session.get_inputs()[0].name
        label = "onnxruntime_1_thread" if threads == 1 else "onnxruntime_default_threads"
        results[label] = _time_each(lambda x: session.run(None, {name: x}), inputs, repeats)
    results["speedup_default_vs_1_thread"] = round(
        results["onnxruntime_default_threads"]["images_per_s"] / results["onnxruntime_1_thread"]["images_per_s"], 3)
    return {"model": card.name, "n_images": len(images), "repeats": repeats, **results}


def bench_runtime() -> dict:
    """Every runtime backend on the same ELPV cells, and the board projection (edgefpga bench)."""
    from edgefpga.runtime.bench import bench_runtime as run

    return run("build/elpv_defect", out=None)


def bench_ros_node() -> dict:
    """The inspection node's added latency over the bare Engine call (ros_nodes/bench.py)."""
    from edgefpga.ros_nodes.bench import bench_node_latency

    return bench_node_latency()


def bench_reference_models() -> dict:
    """MLPerf Tiny's reference shapes on a PYNQ-Z2: bit-exact RTL, II, latency, resources
    (bench/reference_models.py); about 30 minutes, most of it Yosys."""
    from reference_models import bench_reference_models as run

    return run()


BENCHES = {"cpu_inference": bench_cpu_inference, "runtime": bench_runtime, "ros_node": bench_ros_node,
           "reference_models": bench_reference_models}


def git_commit() -> str:
    """The commit the numbers were measured at (``+dirty`` with uncommitted changes)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def main(names: list[str]) -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"bench: unknown benchmark(s) {unknown}; choose from {list(BENCHES)}", file=sys.stderr)
        return 2
    for name in names or list(BENCHES):
        result = BENCHES[name]()
        result["machine"] = {"platform": platform.platform(), "python": platform.python_version()}
        result["commit"] = git_commit()
        path = RESULTS / f"{name}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"{path}: {json.dumps(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
