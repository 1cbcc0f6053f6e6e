"""``edgefpga build``: the vendor half of the road, run only where AMD's tools are installed.

HLS synthesis, IP export and the Vivado block design with PS + AXI DMA + accelerator are
hls4ml's own build scripts (``build_prj.tcl``, ``design.tcl``); this module checks that the
tools are there, runs them through hls4ml, and collects the bitstream and hardware handoff
(.hwh) that PYNQ's ``Overlay`` loads into ``<build>/bitstream/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .convert import load_report
from .onnx_check import ConversionError

# hls4ml runs these by name (VivadoBackend.build / VitisBackend.build and the Vivado design step)
TOOLS = {"VivadoAccelerator": ("vivado_hls", "vivado"), "Vitis": ("vitis_hls", "vivado")}
BITSTREAM_DIR = "bitstream"


class BuildToolError(ConversionError):
    """A vendor tool the build needs is not on PATH."""


def missing_tools(backend: str) -> list[str]:
    return [tool for tool in TOOLS[backend] if shutil.which(tool) is None]


def check_tools(build_dir: Path, report: dict) -> None:
    backend = report["hls"]["backend"]
    missing = missing_tools(backend)
    if missing:
        raise BuildToolError(
            f"{build_dir}: `edgefpga build` needs AMD {' and '.join(missing)} on PATH for the "
            f"{report['board']['name']} ({report['board']['part']}, hls4ml {backend} backend). Install "
            f"{'Vivado HLS + Vivado 2020.1' if backend == 'VivadoAccelerator' else 'Vitis HLS + Vivado 2023.2 or newer'} "
            "and `source <install>/settings64.sh`, or copy this build folder to a machine that has them. "
            "Nothing else needs them: convert, verify (emulator and RTL simulation), the runtime's "
            "emulator/rtl/onnx backends and the ROS 2 nodes all work without vendor tools.")


def collect_outputs(hls_dir: Path, out_dir: Path) -> list[Path]:
    """Copy the newest .bit and .hwh that Vivado wrote (PYNQ wants them side by side, same stem)."""
    found = []
    for suffix in (".bit", ".hwh"):
        candidates = sorted(hls_dir.rglob(f"*{suffix}"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise ConversionError(f"{hls_dir}: Vivado finished but wrote no {suffix} file")
        target = out_dir / f"edgefpga{suffix}"
        shutil.copyfile(candidates[-1], target)
        found.append(target)
    return found


def build(build_dir: str | Path, synth: bool = True, bitfile: bool = True) -> list[Path]:
    """Run HLS synthesis, export and (VivadoAccelerator boards) the bitstream; return the files
    collected in ``<build>/bitstream``."""
    import hls4ml

    build_dir = Path(build_dir).resolve()
    report = load_report(build_dir)
    check_tools(build_dir, report)
    model = hls4ml.converters.link_existing_project(str(build_dir / "hls"))
    model.config.config["OutputDir"] = str(build_dir / "hls")
    kwargs = dict(csim=False, synth=synth, export=True)
    if report["hls"]["backend"] == "VivadoAccelerator":
        kwargs["bitfile"] = bitfile
    model.build(**kwargs)
    out_dir = build_dir / BITSTREAM_DIR
    out_dir.mkdir(exist_ok=True)
    return collect_outputs(build_dir / "hls", out_dir) if bitfile else []
