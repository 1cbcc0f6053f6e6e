"""Hard-example mining at the edge: which results the edge should not decide alone.

KubeEdge Sedna's joint inference sends a sample to the big model when the small one is unsure.
The criteria are pure functions of the class probabilities (``edgefpga.runtime.confidence``, so
that the runtime can put a confidence on every Result); this module names them and decides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edgefpga.runtime.confidence import cross_entropy_confidence, margin_confidence

# criterion name -> confidence of each row of class probabilities (1 sure .. 0 unsure)
CRITERIA: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "cross_entropy": cross_entropy_confidence,
    "margin": margin_confidence,
}
DEFAULT_THRESHOLD = 0.5  # Sedna's default for its cross-entropy filter


def confidence(probabilities: Sequence[float], criterion: str = "cross_entropy") -> float:
    """The confidence of one result's class probabilities under ``criterion``."""
    return float(criterion_fn(criterion)(np.asarray(probabilities, dtype=np.float64))[0])


def criterion_fn(name: str) -> Callable[[np.ndarray], np.ndarray]:
    if name not in CRITERIA:
        raise ValueError(f"unknown hard-example criterion {name!r}: choose one of {sorted(CRITERIA)}")
    return CRITERIA[name]


@dataclass(frozen=True)
class HardExampleFilter:
    """A result is hard when its confidence is below ``threshold`` (as Sedna's filters decide):
    the edge verdict is then worth a second opinion and the sample worth keeping."""

    criterion: str = "cross_entropy"
    threshold: float = DEFAULT_THRESHOLD

    def __post_init__(self) -> None:
        criterion_fn(self.criterion)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"hard-example threshold must be within [0, 1], got {self.threshold}")

    def confidence(self, result) -> float:
        """The result's confidence under this filter's criterion; the Result's own ``confidence``
        where it is the cross-entropy one (computed once, in the runtime)."""
        if self.criterion == "cross_entropy" and getattr(result, "confidence", None) is not None:
            return float(result.confidence)
        return confidence(result.probabilities, self.criterion)

    def is_hard(self, result) -> bool:
        return self.confidence(result) < self.threshold
