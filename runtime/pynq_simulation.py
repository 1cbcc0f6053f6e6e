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
    """Inside the simulation: an Engine over the pynq backend on real images; optionally the two
    failures a board sees (a hung accelerator, an errored DMA), each of which must raise
    BackendError within the timeout, then images again."""
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
        out["hung"] = after_failure(engine, backend, images[:2], cfg["hang_timeout_s"], hung_accelerator)
        out["errored"] = after_failure(engine, backend, images[:2], cfg["hang_timeout_s"], errored_dma)
    engine.close()
    return out


def hung_accelerator() -> None:
    """The accelerator stops answering: the PL held in reset mid-call (the receive transfer
    never completes); the test lets go after the call."""
    from edgefpga.sim import pynq_sim

    pynq_sim.hold_in_reset(True)


def errored_dma() -> None:
    """The DMA's next read of memory fails (a slave error on MM2S): the channel halts with the
    error bit set and, like the real DMA, stays halted until a reset."""
    from edgefpga.sim import pynq_sim

    pynq_sim.inject_dma_error("MM2S")


def after_failure(engine: Engine, backend: PynqBackend, images: list, timeout_s: float, fail) -> dict:
    """One call under ``fail`` (which must raise BackendError, timed), then a normal call."""
    from edgefpga.sim import pynq_sim

    normal, backend.timeout_s = backend.timeout_s, timeout_s
    fail()
    start = time.perf_counter()
    try:
        engine.infer(images[:1])
        error = None
    except BackendError as exc:
        error = str(exc)
    seconds = time.perf_counter() - start
    pynq_sim.hold_in_reset(False)
    backend.timeout_s = normal
    return {"error": error, "seconds": seconds, "scores_after": [r.scores for r in engine.infer(images)]}


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
