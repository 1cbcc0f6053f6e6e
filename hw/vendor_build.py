"""``edgefpga build``: the one road to a bitstream, the only step that needs AMD's tools.

From a build folder's open RTL and PYNQ overlay files it writes ``<build>/vivado/build_overlay.tcl``
(a jinja2 template per board: PS7 for the PYNQ-Z2, PS8 for the Zynq UltraScale+ boards, the AXI
DMA and the accelerator's DMA wrapper, exactly the overlay the runtime's ``pynq`` backend
drives), then runs Vivado in batch mode when it is on PATH, checks its exit status, shows the
log's error lines when it fails, and copies only that run's ``.bit`` / ``.hwh`` into
``<build>/bitstream/`` (the old pair is removed first: a failed rebuild never ships a stale
bitstream). Without Vivado it stops after writing the Tcl and says how to run it elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from .boards import Board, get_board
from .onnx_check import ConversionError
from .overlay import OVERLAY_DIR, load_overlay, processing_system, read_bit_header

BITSTREAM_DIR = "bitstream"
VIVADO_DIR = "vivado"
TCL_NAME = "build_overlay.tcl"
LOG_NAME = "vivado.log"
ERROR_LINES = 12  # of the log, shown when Vivado fails


class VivadoMissing(ConversionError):
    """Vivado is not on PATH; the Tcl is written and the message says how to run it."""


class VivadoFailed(RuntimeError):
    """Vivado ran and failed, or wrote no bitstream; the message holds the log's error lines."""


def write_tcl(build_dir: Path, board: Board, jobs: int = 4) -> Path:
    """``<build>/vivado/build_overlay.tcl`` for ``board`` from the build's overlay files."""
    import jinja2

    from edgefpga import __version__

    from .rtlgen import RTL_DIR

    overlay = load_overlay(build_dir / OVERLAY_DIR)
    folder = build_dir / VIVADO_DIR
    folder.mkdir(exist_ok=True)
    ps = processing_system(board.part)
    name = Path(overlay["bitstream"]).stem
    under_build = [f"{OVERLAY_DIR}/{source}" for source in overlay["sources"]]
    values = {
        "version": __version__, "board": board, "ps": ps, "dma": overlay["dma"], "wrapper": overlay["wrapper"],
        "instance": overlay["instance"], "name": name, "clock_mhz": f"{board.clock_mhz:g}",
        "sources": [os.path.normpath(s) for s in under_build],
        "includes": [os.path.normpath(f"{OVERLAY_DIR}/{inc}") for inc in overlay["includes"]],
        "mem_dir": os.path.normpath(f"{OVERLAY_DIR}/{overlay['mem_dir']}"),
        "length_width": (overlay["max_transfer_bytes"] + 1).bit_length() - 1, "dma_base": f"0x{ps['dma_base']:08X}",
        "jobs": jobs, "tcl": f"{VIVADO_DIR}/{TCL_NAME}", "log": f"{VIVADO_DIR}/{LOG_NAME}",
    }
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(RTL_DIR), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    path = folder / TCL_NAME
    path.write_text(env.get_template("overlay_build.tcl.j2").render(**values))
    return path


def error_lines(log: Path) -> list[str]:
    """The lines of a Vivado log that say what went wrong (ERROR / CRITICAL WARNING)."""
    if not log.is_file():
        return [f"(no log at {log})"]
    lines = log.read_text(errors="replace").splitlines()
    bad = [line for line in lines if line.startswith(("ERROR", "CRITICAL WARNING"))]
    return (bad or lines[-ERROR_LINES:])[:ERROR_LINES]


def run_vivado(vivado: str, tcl: Path, log: Path, timeout_s: float | None) -> None:
    """Vivado in batch mode on ``tcl``; VivadoFailed with the log's error lines unless it exits 0."""
    try:
        done = subprocess.run([vivado, "-mode", "batch", "-nojournal", "-log", str(log), "-source", str(tcl)],
                              cwd=tcl.parent, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise VivadoFailed(f"Vivado did not finish within {timeout_s:g} s; see {log}") from exc
    except OSError as exc:
        raise VivadoFailed(f"{vivado}: cannot run it ({exc})") from exc
    if done.returncode != 0:
        lines = error_lines(log) if log.is_file() else (done.stdout + done.stderr).splitlines()[-ERROR_LINES:]
        raise VivadoFailed(f"Vivado exited with status {done.returncode}; from {log}:\n  " + "\n  ".join(lines))


def collect_outputs(out_dir: Path, name: str, target: Path, board: Board, started: float) -> list[Path]:
    """Copy this run's ``<name>.bit`` / ``.hwh`` into ``target``; refuse missing, stale or damaged ones."""
    files = []
    for suffix in (".bit", ".hwh"):
        made = out_dir / f"{name}{suffix}"
        if not made.is_file() or made.stat().st_mtime < started:
            raise VivadoFailed(f"Vivado finished but this run wrote no {made}")
        files.append(made)
    try:
        header = read_bit_header(files[0])
    except ValueError as exc:
        raise VivadoFailed(f"{files[0]}: {exc}") from exc
    if header["part"] not in board.part:
        raise VivadoFailed(f"{files[0]}: built for {header['part']}, not {board.part}")
    target.mkdir(exist_ok=True)
    copies = [target / f.name for f in files]
    for made, copy in zip(files, copies):
        shutil.copyfile(made, copy)
    return copies


def build(build_dir: str | Path, board: str | None = None, vivado: str | None = None, jobs: int = 4,
          timeout_s: float | None = None) -> list[Path]:
    """Write the Tcl and, with Vivado on PATH, build the bitstream; return the files written.
    ``board`` defaults to the one the build was converted for."""
    build_dir = Path(build_dir).resolve()
    report_path = build_dir / "report.json"
    if not report_path.is_file():
        raise ConversionError(f"{build_dir}: not a build folder (no report.json): run `edgefpga convert` first")
    converted_for = json.loads(report_path.read_text())["board"]["name"]
    target_board = get_board(board or converted_for)
    if target_board.name != converted_for:
        raise ConversionError(f"{build_dir} was converted for {converted_for}, not {target_board.name}: convert it "
                              f"again with --board {target_board.name} (precisions and parallelism depend on the board)")
    tcl = write_tcl(build_dir, target_board, jobs)
    exe = vivado or shutil.which("vivado")
    if exe is None:
        raise VivadoMissing(f"wrote {tcl}; Vivado is not on PATH, so no bitstream was built. On a machine with "
                            f"Vivado (2022.2 or newer), from {build_dir}: `vivado -mode batch -nojournal -source "
                            f"{VIVADO_DIR}/{TCL_NAME}`, then run `edgefpga build` again there to collect the files "
                            f"into {BITSTREAM_DIR}/, or copy {VIVADO_DIR}/out/*.bit and *.hwh there yourself.")
    name = Path(load_overlay(build_dir / OVERLAY_DIR)["bitstream"]).stem
    target = build_dir / BITSTREAM_DIR
    for stale in (target / f"{name}.bit", target / f"{name}.hwh"):
        stale.unlink(missing_ok=True)  # a failed run must not leave the previous bitstream looking fresh
    started = time.time() - 1.0  # file times have coarse resolution on some file systems
    run_vivado(exe, tcl, tcl.parent / LOG_NAME, timeout_s)
    return [tcl, *collect_outputs(tcl.parent / "out", name, target, target_board, started)]
