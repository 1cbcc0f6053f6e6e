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


@dataclass
class Harness:
    """A compiled harness program; ``seconds`` is the Verilator build time (0 when it came from
    the content-keyed cache, edgefpga/cache.py)."""

    program: Path
    seconds: float
    cached: bool


ROM_LINK = "rom"  # next to the program: a link to the RTL's src/, where its ROM (.mem) files are read


def harness_key(rtl_dir: Path, manifest: dict, flags: list[str]) -> str:
    """Everything the program is made from: Verilator's release, the flags, the harness source and
    every Verilog source and include (by name and content). ROM contents are not part of it: the
    program reads them at run time, so a build folder with other weights reuses the program."""
    from importlib.metadata import PackageNotFoundError, version

    from edgefpga.cache import digest

    try:
        release = version("verilator")
    except PackageNotFoundError:
        release = "unknown"
    parts = [release, " ".join(flags), HARNESS.read_bytes()]
    for source in manifest["sources"]:
        parts += [source, (rtl_dir / source).read_bytes()]
    for inc in manifest.get("includes", []):  # headers; the ROM files beside them are read at run time
        for f in sorted(p for p in (rtl_dir / inc).rglob("*") if p.is_file() and p.suffix != ".mem"):
            parts += [f"{inc}/{f.relative_to(rtl_dir / inc)}", f.read_bytes()]
    return digest(*parts)


def build_harness(rtl_dir: Path, work: Path) -> Harness:
    """The manifest's sources and the harness compiled into ``work/obj/harness``, or the same
    program from the cache when nothing it is made from changed. The program runs in
    ``work/obj/rom`` (a link to the RTL's ``src/``), so the tops read their ROM files from there
    (MEM_DIR ``./``): the program does not depend on where the build folder lives."""
    from edgefpga.cache import fetch_file, store_file

    manifest = json.loads((rtl_dir / "manifest.json").read_text())
    stages = max(1, len(manifest.get("stages", [])))
    # g++ -O1 for the code that runs every cycle and for Verilator's library: on the ELPV design
    # half the compile of -O2 (16 s of CPU, not 32) and the same simulation speed (16 frames in
    # 2.5 s, -O2 2.4 s; -O0 12 s). -O0 for Verilator's "slow" files (reset, ROM loading and the
    # first settle, run once): a quarter of the compile (gray_48x80: 17 s of CPU, not 22.5).
    flags = ["--cc", "--exe", "--build", "-O3", "-Wno-fatal", "-Wno-lint", "-Wno-style", "--top-module",
             manifest["top"], "--prefix", "Vtop", '-GMEM_DIR="./"', "-MAKEFLAGS", "OPT_FAST=-O1",
             "-MAKEFLAGS", "OPT_GLOBAL=-O1", "-MAKEFLAGS", "OPT_SLOW=-O0", "-CFLAGS",
             f"-std=c++17 -DTOP_HEADER='\"Vtop.h\"' -DTOP_CLASS=Vtop -DSTAGES={stages}"]
    obj = work / "obj"
    program = obj / "harness"
    key = harness_key(rtl_dir, manifest, flags)
    start = time.perf_counter()
    stamp = obj / "harness.key"  # the key of the program in obj/, to skip even the copy from the cache
    here = program.is_file() and stamp.is_file() and stamp.read_text() == key
    cached = here or fetch_file("verilator", key, "harness", program)
    if not cached:
        work.mkdir(parents=True, exist_ok=True)
        prepare_environment(work)
        includes = [f"-I{(rtl_dir / inc).resolve()}" for inc in manifest.get("includes", [])]
        sources = [str((rtl_dir / s).resolve()) for s in manifest["sources"]]
        cmd = [str(verilator_binary()), *flags, "-j", str(os.cpu_count() or 2), "-Mdir", str(obj), *includes,
               "-o", "harness", *sources, str(HARNESS)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise SimulatorError(f"{rtl_dir}: Verilator build failed:\n{(run.stdout + run.stderr)[-3000:]}")
        store_file("verilator", key, program)
    stamp.write_text(key)
    link = obj / ROM_LINK
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to((rtl_dir / "src").resolve(), target_is_directory=True)
    return Harness(program, 0.0 if cached else time.perf_counter() - start, cached)


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
    work, program = work.resolve(), program.resolve()  # the program runs in its ROM folder
    work.mkdir(parents=True, exist_ok=True)
    frames = np.ascontiguousarray(pixels.transpose(0, 2, 3, 1)).astype(np.uint8)
    (work / "pixels.bin").write_bytes(frames.tobytes())
    (work / "busy.txt").unlink(missing_ok=True)
    process = subprocess.Popen([str(program), str(work / "pixels.bin"), str(len(frames)), str(frames[0].size),
                                str(outputs), str(work / "scores.txt"), str(idle), str(stall), str(seed), str(watchdog),
                                str(work / "busy.txt")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=program.parent / ROM_LINK)
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
    program = build_harness(build_dir / "rtl", build_dir / "sim").program
    with tempfile.TemporaryDirectory(prefix="edgefpga-timing-") as work:
        timing = measure_timing(program, pixels, manifest["output"]["outputs"], Path(work))
    return timing.at_clock(clock)
