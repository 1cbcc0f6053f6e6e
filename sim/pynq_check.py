"""Run a PYNQ driver against the generated RTL in simulation (tb_pynq_overlay): Verilator builds
the overlay wrapper, cocotb + cocotbext-axi play the PS7 and the AXI DMA."""

from __future__ import annotations

import json
from pathlib import Path

from edgefpga.hw.overlay import OVERLAY_DIR, OverlayMissing, load_overlay

from .verilator import SimulatorError, build_and_test


def run_on_simulated_pl(build_dir: Path, driver: str, config: dict, work: Path) -> dict:
    """Call ``driver`` (``module:function``) with ``config`` plus ``hwh`` and ``bitfile`` (the
    overlay's, for ``Overlay``) inside the simulation of ``build_dir``'s overlay; return what it
    returned."""
    overlay_dir = Path(build_dir).resolve() / OVERLAY_DIR
    try:
        overlay = load_overlay(overlay_dir)
    except OverlayMissing as exc:
        raise SimulatorError(str(exc)) from exc
    if overlay["hwh"] is None:
        raise SimulatorError(f"{overlay_dir}: no .hwh: the simulated PS-PL is Zynq-7000 only (e.g. --board pynq-z2)")
    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    result = work / "result.json"
    result.unlink(missing_ok=True)
    hwh = overlay_dir / overlay["hwh"]
    config = {**config, "driver": driver, "hwh": str(hwh), "bitfile": str(hwh.with_suffix(".bit")),
              "result": str(result)}
    (work / "config.json").write_text(json.dumps(config, indent=2))
    build_and_test([overlay_dir / s for s in overlay["sources"]], overlay["wrapper"],
                   {"MEM_DIR": f'"{(overlay_dir / overlay["mem_dir"]).resolve()}/"'}, work / "sim",
                   "edgefpga.sim.tb_pynq_overlay", {"EF_PYNQ_CONFIG": str(work / "config.json")},
                   [overlay_dir / inc for inc in overlay["includes"]])
    if not result.is_file():
        raise SimulatorError(f"{overlay['wrapper']}: the driver returned no result; see {work / 'sim' / 'test.log'}")
    return json.loads(result.read_text())
