"""The ELPV solar-cell electroluminescence dataset and its fixed train/validation/test split.

The data comes from the ``elpv-dataset`` PyPI package (2624 cells, 300x300 8-bit gray, a defect
probability in {0, 1/3, 2/3, 1} from expert labelling, mono or poly crystalline). It is licensed
CC BY-NC-SA 4.0: models trained on it inherit the non-commercial condition, which every model
card states.

The test split is the project contract (DESIGN.md): every number we publish is on these 654
cells, so the split function must never change.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

CLASSES = ["functional", "defective"]
DEFECT_THRESHOLD = 0.5
LICENSE = "CC BY-NC-SA 4.0"
SOURCE = "elpv-dataset (PyPI), Buerhop-Lutz et al. 2018 / Deitsch et al. 2019"


@dataclass(frozen=True)
class ElpvData:
    """All 2624 cells with their labels, as loaded once from the package."""

    images: np.ndarray  # (N, 300, 300) uint8
    proba: np.ndarray  # (N,) defect probability in {0, 1/3, 2/3, 1}
    types: np.ndarray  # (N,) "mono" | "poly"

    @property
    def labels(self) -> np.ndarray:
        """Binary class index per cell: 1 (defective) when the defect probability is >= 0.5."""
        return binary_labels(self.proba)


def binary_labels(proba: np.ndarray) -> np.ndarray:
    return (np.asarray(proba) >= DEFECT_THRESHOLD).astype(np.int64)


@lru_cache(maxsize=1)
def load() -> ElpvData:
    """Load the dataset from the installed ``elpv-dataset`` package (no network access)."""
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError as exc:  # pragma: no cover - setup installs it
        raise RuntimeError(
            "the ELPV dataset package is missing: run `make setup` or `pip install elpv-dataset`"
        ) from exc
    images, proba, types = load_dataset()
    return ElpvData(np.asarray(images), np.asarray(proba, dtype=np.float64), np.asarray(types))


def strata_of(proba: np.ndarray, types: np.ndarray) -> np.ndarray:
    """Stratum per cell: the four defect-probability levels crossed with mono/poly."""
    return np.round(np.asarray(proba) * 3).astype(int) * 2 + (np.asarray(types) == "poly").astype(int)


def stratified_split(
    proba: np.ndarray, types: np.ndarray, test_frac: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The contract split of DESIGN.md, verbatim: sorted (train, test) indices."""
    rng = np.random.default_rng(seed)
    strata = strata_of(proba, types)
    train, test = [], []
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        idx = idx[rng.permutation(len(idx))]
        n_test = int(round(test_frac * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@dataclass(frozen=True)
class Split:
    """Indices into the full dataset. ``fit`` + ``val`` together are the contract's train part."""

    fit: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def train(self) -> np.ndarray:
        return np.sort(np.concatenate([self.fit, self.val]))


def split(data: ElpvData, val_frac: float = 0.15, seed: int = 0) -> Split:
    """Contract train/test split, then a stratified validation part taken from train only."""
    train, test = stratified_split(data.proba, data.types)
    fit_local, val_local = stratified_split(
        data.proba[train], data.types[train], test_frac=val_frac, seed=seed + 1
    )
    return Split(fit=train[fit_local], val=train[val_local], test=test)


def subset(name: str, data: ElpvData | None = None) -> np.ndarray:
    """Indices of a named subset: ``train``, ``fit``, ``val`` or ``test``."""
    parts = split(data or load())
    choices = {"train": parts.train, "fit": parts.fit, "val": parts.val, "test": parts.test}
    if name not in choices:
        raise ValueError(f"unknown ELPV subset {name!r}; choose one of {sorted(choices)}")
    return choices[name]
