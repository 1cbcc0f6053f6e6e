"""How sure a classifier is of one answer, from its class probabilities alone.

These are the pure criteria of hard-example mining (Sedna's joint inference): the runtime puts
the cross-entropy confidence on every ``Result`` so that anything downstream (a ROS node, the
fleet's ``HardExampleFilter``) reads one number without recomputing it; the fleet decides what
"hard" means. They live here, not in ``fleet``, because the runtime may not import the fleet.

Both take probabilities as the Engine reports them. A softmax row is a distribution already; a
sigmoid model's independent per-class probabilities are first made one (normalised to sum 1,
and a single output p read as the two-class distribution [1 - p, p]), so the same criterion
means the same thing for either kind of head.
"""

from __future__ import annotations

import numpy as np


def as_distribution(probabilities) -> np.ndarray:
    """Rows of class probabilities as distributions over K >= 2 classes, shape (N, K)."""
    p = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
    if p.shape[1] == 1:
        p = np.concatenate([1.0 - p, p], axis=1)
    p = np.clip(p, 0.0, None)
    total = p.sum(axis=1, keepdims=True)
    if np.any(total <= 0) or not np.all(np.isfinite(p)):
        raise ValueError(f"class probabilities must be finite and not all zero, got {p.tolist()}")
    return p / total


def cross_entropy_confidence(probabilities) -> np.ndarray:
    """Sedna's cross-entropy criterion per row: ``1 + sum(p ln p) / ln K``, i.e. one minus the
    entropy normalised by its maximum. 1 for a one-hot answer, 0 for the uniform one; it uses
    every class, so a runner-up spread over many classes counts as doubt too."""
    p = as_distribution(probabilities)
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)  # p ln p -> 0 as p -> 0
    return np.clip(1.0 + plogp.sum(axis=1) / np.log(p.shape[1]), 0.0, 1.0)


def margin_confidence(probabilities) -> np.ndarray:
    """The margin criterion per row: top-1 minus top-2 probability. 1 for a one-hot answer, 0 when
    the two best classes tie; it looks only at the decision actually at stake."""
    p = np.sort(as_distribution(probabilities), axis=1)
    return p[:, -1] - p[:, -2]
