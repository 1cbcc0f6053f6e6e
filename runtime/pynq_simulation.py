"""The ``pynq`` backend without a board: the same driver code on the simulated PS-PL
(``edgefpga.sim.pynq_sim`` in place of ``pynq``), driving the generated RTL in Verilator.

``run_pynq_backend`` is what the tests and ``edgefpga bench`` call; ``drive`` is the part that
runs inside the simulation, as it would run on the board's ARM cores.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .backends import BackendError
from .backends.pynq import PynqBackend
from .engine import Engine
from .source import ModelRef


def drive(cfg: dict) -> dict:
    """Inside the simulation: an Engine over the pynq backend on real images; optionally a hung
    accelerator (PL held in reset) that must raise within the timeout, then images again."""
    from edgefpga.sim import pynq_sim

    model = ModelRef.resolve(cfg["build"])
    backend = PynqBackend(model, pynq_module=pynq_sim, bitfile=cfg["bitfile"], timeout_s=cfg["timeout_s"],
                          max_batch=cfg["max_batch"])
    engine = Engine(model, backend, "simulated PS-PL (edgefpga.sim.pynq_sim)")
    images = list(np.load(cfg["images"])["images"])
    start = time.perf_counter()
    results = engine.infer(images)
    out = {"scores": [r.scores for r in results], "labels": [r.label for r in results],
           "seconds": time.perf_counter() - start, "describe": engine.describe()}
    if cfg.get("hang_check"):
        out.update(hung_accelerator(engine, backend, images[:2], cfg["hang_timeout_s"]))
    engine.close()
    return out


def hung_accelerator(engine: Engine, backend: PynqBackend, images: list, timeout_s: float) -> dict:
    from edgefpga.sim import pynq_sim

    pynq_sim.hold_in_reset(True)
    normal, backend.timeout_s = backend.timeout_s, timeout_s
    start = time.perf_counter()
    try:
        engine.infer(images[:1])
        error = None
    except BackendError as exc:
        error = str(exc)
    seconds = time.perf_counter() - start
    pynq_sim.hold_in_reset(False)
    backend.timeout_s = normal
    return {"hang_error": error, "hang_seconds": seconds, "after_hang_scores": [r.scores for r in engine.infer(images)]}


def run_pynq_backend(build_dir: Path, images: np.ndarray, work: Path, timeout_s: float = 600.0, max_batch: int = 64,
                     hang_check: bool = False, hang_timeout_s: float = 5.0) -> dict:
    """Infer ``images`` (raw 8-bit images, any size) with the pynq backend on the simulated PL."""
    from edgefpga.sim.pynq_check import run_on_simulated_pl

    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "images.npz", images=images)
    config = {"build": str(Path(build_dir).resolve()), "images": str(work / "images.npz"), "timeout_s": timeout_s,
              "max_batch": max_batch, "hang_check": hang_check, "hang_timeout_s": hang_timeout_s}
    return run_on_simulated_pl(build_dir, f"{__name__}:drive", config, work)
