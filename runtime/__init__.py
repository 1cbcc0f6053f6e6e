"""Runtime: the Engine over board, RTL simulation, emulator and ONNX Runtime, and the CLI.

    import edgefpga.runtime as rt
    with rt.open("build/elpv_defect") as engine:       # backend="auto": the board if present
        for result in engine.infer([image]):
            print(result.label, result.score, result.latency_ms, result.backend)
"""

from .backends import BACKENDS, BackendError, BackendUnavailable, EngineError
from .engine import Engine, Result, open_engine

open = open_engine  # noqa: A001  (edgefpga.runtime.open, as DESIGN.md names it)

__all__ = ["BACKENDS", "BackendError", "BackendUnavailable", "Engine", "EngineError", "Result", "open"]
