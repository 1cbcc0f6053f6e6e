"""Backends behind the one Engine interface, chosen by name or by what is present (``auto``).

Like PYNQ's drivers: one interface (``Backend.run``: 8-bit frames in, class scores out), several
implementations. ``auto`` takes the board when PYNQ finds one, else the first simulation backend
the model supports, in the order of ``SIMULATION_ORDER``.
"""

from __future__ import annotations

from .base import Backend, BackendError, BackendOutput, BackendUnavailable, EngineError
from .emulator import EmulatorBackend
from .onnx import OnnxBackend
from .pynq import PynqBackend
from .rtl import RtlBackend

BACKENDS: dict[str, type[Backend]] = {b.name: b for b in (PynqBackend, RtlBackend, EmulatorBackend, OnnxBackend)}
SIMULATION_ORDER = ("rtl", "emulator", "onnx")  # bit-exact with the board first, then the C-sim, then float

__all__ = ["BACKENDS", "SIMULATION_ORDER", "Backend", "BackendError", "BackendOutput", "BackendUnavailable",
           "EngineError", "choose_backend"]


def choose_backend(model) -> tuple[str, str]:
    """(backend name, why) for ``auto``."""
    board = PynqBackend.unavailable(model)
    if board is None:
        return "pynq", "a PYNQ device is present"
    skipped = []
    for name in SIMULATION_ORDER:
        reason = BACKENDS[name].unavailable(model)
        if reason is None:
            why = f"no board ({board})"
            return name, why + (f"; skipped {', '.join(skipped)}" if skipped else "")
        skipped.append(f"{name}: {reason}")
    raise BackendUnavailable(f"no backend can run {model.model_id}: " + "; ".join(skipped))
