"""The generated RTL compiled with Verilator into a native program (sim/harness/axis_harness.cpp)
that streams many frames fast, without cocotb: the bulk bit-exactness check of `edgefpga verify`
and, later, the runtime's `rtl` backend. cocotb (tb_axis_top.py) covers the protocol cases."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .verilator import SimulatorError, prepare_environment, verilator_binary

HARNESS = Path(__file__).resolve().parent / "harness" / "axis_harness.cpp"


@dataclass
class HarnessRun:
    scores: np.ndarray  # (N, outputs) integers as the output stream carries them (sign-extended)
    first_in: np.ndarray  # cycle each frame's first pixel was accepted
    last_out: np.ndarray  # cycle each frame's last score left
    framing_errors: int
    seconds: float
    busy: np.ndarray | None = None  # cycles each stage worked over the run (manifest stage order)

    @property
    def latency_cycles(self) -> np.ndarray:
        return self.last_out - self.first_in + 1

    @property
    def interval_cycles(self) -> np.ndarray:
        return np.diff(self.first_in)


def build_harness(rtl_dir: Path, work: Path) -> tuple[Path, float]:
    """Compile the manifest's sources and the harness; return the program and the build seconds."""
    manifest = json.loads((rtl_dir / "manifest.json").read_text())
    work.mkdir(parents=True, exist_ok=True)
    prepare_environment(work)
    sources = [str((rtl_dir / s).resolve()) for s in manifest["sources"]]
    mem_dir = str((rtl_dir / "src").resolve()) + "/"
    includes = [f"-I{(rtl_dir / inc).resolve()}" for inc in manifest.get("includes", [])]
    cmd = [str(verilator_binary()), "--cc", "--exe", "--build", "-O3", "-j", str(os.cpu_count() or 2),
           "-Wno-fatal", "-Wno-lint", "-Wno-style", "--top-module", manifest["top"], "--prefix", "Vtop",
           "-Mdir", str(work / "obj"), f"-GMEM_DIR=\"{mem_dir}\"", *includes,
           "-CFLAGS", f"-O2 -std=c++17 -DTOP_HEADER='\"Vtop.h\"' -DTOP_CLASS=Vtop -DSTAGES={max(1, len(manifest.get('stages', [])))}",
           "-o", "harness", *sources, str(HARNESS)]
    start = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise SimulatorError(f"{rtl_dir}: Verilator build failed:\n{(run.stdout + run.stderr)[-3000:]}")
    return work / "obj" / "harness", time.perf_counter() - start


def ensure_harness(rtl_dir: Path, work: Path) -> tuple[Path, float]:
    """The harness program, rebuilt only when it is older than the RTL or the harness source
    (the runtime's ``rtl`` backend opens in a second instead of a Verilator build each time)."""
    program = work / "obj" / "harness"
    manifest = json.loads((rtl_dir / "manifest.json").read_text())
    inputs = [rtl_dir / "manifest.json", HARNESS, *(rtl_dir / s for s in manifest["sources"])]
    if program.is_file() and program.stat().st_mtime > max(p.stat().st_mtime for p in inputs):
        return program, 0.0
    return build_harness(rtl_dir, work)


DEFAULT_WATCHDOG = 5_000_000  # cycles without a beat in or out before the harness calls it a deadlock


def run_harness(program: Path, pixels: np.ndarray, outputs: int, work: Path, idle: int = 0, stall: int = 0,
                seed: int = 1, timeout_s: float | None = None, watchdog: int = DEFAULT_WATCHDOG,
                workers: int = 1) -> HarnessRun:
    """Stream (N, C, H, W) uint8 pixels (sent NHWC, channels interleaved) and collect the scores;
    a design that stops moving for ``watchdog`` cycles raises (a deadlock fails, it does not hang).
    With ``workers`` > 1 the frames are split over that many simulations running side by side
    (each its own reset and seed): for bit-exactness, not for cycle counts across the split."""
    shares = [idx for idx in np.array_split(np.arange(len(pixels)), max(1, min(workers, len(pixels)))) if len(idx)]
    start = time.perf_counter()
    runs = [start_harness(program, pixels[idx], outputs, work / f"part{k}" if len(shares) > 1 else work,
                          idle, stall, seed + k, watchdog) for k, idx in enumerate(shares)]
    parts = [finish_harness(program, run, outputs, timeout_s) for run in runs]
    seconds = time.perf_counter() - start
    busy = parts[0].busy if len(parts) == 1 else None
    return HarnessRun(np.concatenate([p.scores for p in parts]), np.concatenate([p.first_in for p in parts]),
                      np.concatenate([p.last_out for p in parts]), sum(p.framing_errors for p in parts), seconds, busy)


@dataclass
class StartedHarness:
    process: subprocess.Popen
    work: Path
    frames: int


def start_harness(program: Path, pixels: np.ndarray, outputs: int, work: Path, idle: int, stall: int, seed: int,
                  watchdog: int) -> StartedHarness:
    work.mkdir(parents=True, exist_ok=True)
    frames = np.ascontiguousarray(pixels.transpose(0, 2, 3, 1)).astype(np.uint8)
    (work / "pixels.bin").write_bytes(frames.tobytes())
    (work / "busy.txt").unlink(missing_ok=True)
    process = subprocess.Popen([str(program), str(work / "pixels.bin"), str(len(frames)), str(frames[0].size),
                                str(outputs), str(work / "scores.txt"), str(idle), str(stall), str(seed), str(watchdog),
                                str(work / "busy.txt")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return StartedHarness(process, work, len(frames))


def finish_harness(program: Path, run: StartedHarness, outputs: int, timeout_s: float | None) -> HarnessRun:
    try:
        _, err = run.process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        run.process.kill()
        run.process.communicate()
        raise SimulatorError(f"{program}: no result after {timeout_s:g} s for {run.frames} frame(s)") from exc
    if run.process.returncode != 0:
        raise SimulatorError(f"{program}: {err.strip()}")
    rows = [line.split() for line in (run.work / "scores.txt").read_text().splitlines()]
    errors = sum(row[-1] == "framing-error" for row in rows)
    values = np.array([[int(v) for v in row[2:2 + outputs]] for row in rows], dtype=np.int64)
    busy_file = run.work / "busy.txt"
    busy = np.array([int(v) for v in busy_file.read_text().split()]) if busy_file.is_file() else None
    return HarnessRun(values, np.array([int(r[0]) for r in rows]), np.array([int(r[1]) for r in rows]), errors, 0.0,
                      busy)


def to_signed(values: np.ndarray, bits: int) -> np.ndarray:
    values = values & ((1 << bits) - 1)
    return np.where(values >= 1 << (bits - 1), values - (1 << bits), values)


@dataclass
class FrameTiming:
    """Exact cycles of frames streamed back to back at full rate (no idle input, no backpressure):
    the one cycle measurement `edgefpga verify`, the benchmarks and the demo report."""

    latency_cycles: int  # the largest first-pixel-in to last-score-out over the frames
    latency_single_frame_cycles: int  # the first frame's, alone in the pipeline
    ii_cycles: int  # the largest interval between two frames' first pixels
    frames: int
    run: HarnessRun

    def at_clock(self, clock_mhz: float) -> dict:
        return {"clock_mhz": clock_mhz, "ii_cycles": self.ii_cycles, "latency_cycles": self.latency_cycles,
                "frames": self.frames, "fps": round(clock_mhz * 1e6 / self.ii_cycles, 1),
                "latency_us": round(self.latency_cycles / clock_mhz, 1)}


TIMING_FRAMES = 6  # enough for the pipeline to fill: the interval settles from the second frame


def measure_timing(program: Path, pixels: np.ndarray, outputs: int, work: Path,
                   watchdog: int = DEFAULT_WATCHDOG) -> FrameTiming:
    """Stream the first TIMING_FRAMES frames of ``pixels`` back to back and count cycles."""
    if len(pixels) < 2:
        raise ValueError(f"timing needs at least 2 frames back to back, got {len(pixels)}")
    run = run_harness(program, pixels[:TIMING_FRAMES], outputs, work, watchdog=watchdog)
    return FrameTiming(int(np.max(run.latency_cycles)), int(run.latency_cycles[0]), int(np.max(run.interval_cycles)),
                       len(run.first_in), run)


def project_board(build_dir: Path, pixels: np.ndarray) -> dict:
    """Frames per second and latency of a build folder's accelerator at its board's clock, from
    exact RTL cycles (the harness is built once per build folder)."""
    import tempfile

    build_dir = Path(build_dir)
    manifest = json.loads((build_dir / "rtl" / "manifest.json").read_text())
    clock = json.loads((build_dir / "report.json").read_text())["board"]["clock_mhz"]
    program, _ = ensure_harness(build_dir / "rtl", build_dir / "sim")
    with tempfile.TemporaryDirectory(prefix="edgefpga-timing-") as work:
        timing = measure_timing(program, pixels, manifest["output"]["outputs"], Path(work))
    return timing.at_clock(clock)
