"""Hard-example mining at the edge: which results the edge should not decide alone.

KubeEdge Sedna's joint inference sends a sample to the big model when the small one is unsure.
The criteria are pure functions of the class probabilities (``edgefpga.runtime.confidence``, so
that the runtime can put a confidence on every Result); this module names them and decides.

A threshold alone fixes how sure the edge must be, not how much goes to the cloud: the share under
it moves with the cells a line sees (ELPV's 20 %-of-validation threshold escalates 25 % of the
test cells). Where the cloud's capacity or the link is what limits, an ``EscalationBudget`` caps
the share instead: at most ``share`` of the results are hard, the least confident of the recent
ones, whatever their absolute confidence.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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


BUDGET_WINDOW = 500  # recent results whose confidences rank the current one (~17 s at 30 Hz)


@dataclass
class EscalationBudget:
    """At most ``share`` of the results hard, the least confident ones: a result is admitted when
    its confidence is at or under the ``share`` quantile of the last ``window`` results' (itself
    included) and the results admitted so far stay within ``share`` of those seen (a hard cap, so
    a run of unsure frames cannot exceed it). Every result must pass through ``admit``, hard or
    not: the window is the line's recent confidence distribution."""

    share: float
    window: int = BUDGET_WINDOW
    seen: int = 0
    admitted: int = 0
    recent: deque = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise ValueError(f"escalation budget must be a share within (0, 1], got {self.share}")
        if self.window < 1:
            raise ValueError(f"escalation budget window must be at least 1 result, got {self.window}")
        self.recent = deque(maxlen=self.window)

    def admit(self, confidence: float, eligible: bool = True) -> bool:
        """Whether this result may be hard (``eligible``: it is under the filter's threshold)."""
        self.recent.append(confidence)
        self.seen += 1
        admitted = (eligible and self.admitted + 1 <= self.share * self.seen
                    and confidence <= float(np.quantile(np.fromiter(self.recent, float), self.share)))
        self.admitted += admitted
        return admitted


@dataclass(frozen=True)
class HardExampleFilter:
    """A result is hard when its confidence is below ``threshold`` (as Sedna's filters decide):
    the edge verdict is then worth a second opinion and the sample worth keeping. With a
    ``budget`` (stateful: one per stream), only the results it admits among those."""

    criterion: str = "cross_entropy"
    threshold: float = DEFAULT_THRESHOLD
    budget: EscalationBudget | None = None

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
        value = self.confidence(result)
        if self.budget is None:
            return value < self.threshold
        return self.budget.admit(value, eligible=value < self.threshold)
