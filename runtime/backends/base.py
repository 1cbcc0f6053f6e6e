"""The one interface every backend implements, and the errors the runtime raises."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..source import ModelRef


class EngineError(RuntimeError):
    """A failure the caller can act on; the message names the input or the part that failed."""


class BackendUnavailable(EngineError):
    """The backend cannot run here or for this model (no board, no build folder, no tool)."""


class BackendError(EngineError):
    """A backend call failed (a DMA that does not complete, a simulator that exits); the engine
    has recovered and takes the next call."""


@dataclass
class BackendOutput:
    scores: np.ndarray  # (N, classes) float64: the class scores as the backend computes them
    cycles: np.ndarray | None = None  # (N,) accelerator clock cycles per frame, where the backend knows them


class Backend(ABC):
    """Runs a batch of frames: uint8 pixels (N, C, H, W) exactly as the accelerator's input stream
    carries them (resized, not normalized) -> class scores. Preprocessing happens once, in the
    engine, so that every backend sees the same bytes."""

    name: ClassVar[str]
    max_batch: int = 64

    def __init__(self, model: ModelRef):
        self.model = model

    @classmethod
    def unavailable(cls, model: ModelRef) -> str | None:
        """Why this backend cannot run ``model`` on this machine, or None when it can (cheap: no build)."""
        return None

    @abstractmethod
    def run(self, pixels: np.ndarray) -> BackendOutput:
        ...

    def dequantized(self, values: np.ndarray) -> np.ndarray:
        """The accelerator's output values as the model's scores. A QDQ model's accelerator returns
        its output quantizer's integers ``q``; the scores are ``scale * (q - zero_point)``, what ONNX
        Runtime returns on the file (report.json ``output_dequantize``; hw/qdq_in.py). Other builds:
        the values themselves."""
        scale, zero = self.model.output_scale, self.model.output_zero_point
        return values if (scale, zero) == (1.0, 0) else (values - zero) * scale

    def describe(self) -> str:
        """One line for logs and the CLI: what runs the model."""
        return self.name

    def close(self) -> None:
        """Release what the backend holds (processes, buffers)."""
