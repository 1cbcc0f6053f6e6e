"""What the one training pipeline takes from any data source: labelled 8-bit images split three ways.

ELPV (``elpv.training_data``) and a user's folder or CSV (``folder.training_data``) are two
sources of the same ``TrainingData``; training, export, evaluation and the card only ever see
this. The split is stratified by a stratum per image (ELPV: defect level x cell type; a folder:
the class), with a fixed seed that the card records, so ``edgefpga eval`` can rebuild it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class DatasetError(ValueError):
    """Training data that cannot be used: the message names the file or folder and the reason."""


@contextmanager
def staged_folder(out: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` that replaces ``out`` only when the block succeeds:
    a failed step never leaves a half-written model or data folder."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
        if out.exists():
            shutil.rmtree(out)
        staging.chmod(0o755)  # mkdtemp makes it private; the folder is meant to be shared
        shutil.move(str(staging), out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


@dataclass(frozen=True)
class Split:
    """Indices into the data. ``fit`` + ``val`` together are the train part."""

    fit: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def train(self) -> np.ndarray:
        return np.sort(np.concatenate([self.fit, self.val]))

    def subset(self, name: str) -> np.ndarray:
        """Indices of ``train``, ``fit``, ``val`` or ``test``."""
        choices = {"train": self.train, "fit": self.fit, "val": self.val, "test": self.test}
        if name not in choices:
            raise ValueError(f"unknown subset {name!r}; choose one of {sorted(choices)}")
        return choices[name]

    def sizes(self) -> dict[str, int]:
        return {"fit": len(self.fit), "val": len(self.val), "test": len(self.test)}


def stratified_split(strata: np.ndarray, test_frac: float, seed: int,
                     min_test: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices: per stratum, a seeded permutation, the first
    ``round(test_frac * n)`` (at least ``min_test``) to test. With ``min_test=0`` this is the
    DESIGN.md contract split (ELPV's strata go through it unchanged)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        idx = idx[rng.permutation(len(idx))]
        n_test = max(min_test, int(round(test_frac * len(idx))))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@dataclass(frozen=True)
class TrainingData:
    """Labelled images and their split, from any source.

    ``images`` are 8-bit gray (H, W) or BGR (H, W, 3) arrays of any size (an array (N, H, W) or a
    list); ``targets`` is an optional (N, classes) target distribution (ELPV's expert
    probabilities), else training uses one-hot labels. ``normalization`` is the card's
    (mean, std); None: per-channel statistics of the fit images. ``card`` holds the card's
    ``task`` and ``dataset`` blocks, which say where the data came from and how it was split."""

    classes: list[str]
    images: Any
    labels: np.ndarray
    split: Split
    color: str = "gray"
    defect_classes: list[str] = field(default_factory=list)
    targets: np.ndarray | None = None
    normalization: tuple[float, float] | None = None
    card: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    @property
    def defect_indices(self) -> list[int]:
        return [self.classes.index(c) for c in self.defect_classes]

    def take(self, idx: np.ndarray) -> list | np.ndarray:
        """The images at ``idx`` (works for an array and for a list of differently sized images)."""
        if isinstance(self.images, np.ndarray):
            return self.images[idx]
        return [self.images[i] for i in idx]


def data_of_card(card) -> TrainingData:
    """The data a model was trained on, rebuilt from its card's ``dataset`` block: ELPV, or the
    user's folder/CSV with the recorded split seed and fractions."""
    dataset = card.raw.get("dataset", {})
    if dataset.get("name") == "ELPV":
        from . import elpv

        return elpv.training_data()
    if dataset.get("kind") in ("folder", "csv"):
        from . import folder

        return folder.training_data_from_record(dataset, card.classes, card.defect_classes, str(card.path))
    from .card import ModelCardError

    raise ModelCardError(f"{card.path}: dataset {dataset.get('name')!r} is neither ELPV nor a folder or CSV "
                         "that edgefpga train recorded; evaluate it with edgefpga infer <folder> instead")


def with_new_samples(base: TrainingData, replay: np.ndarray, images: list, labels: np.ndarray,
                     note: str) -> TrainingData:
    """``base`` extended by new labelled ``images`` (fine-tuning, ``edgefpga retrain``): the fit
    part is ``replay`` (indices of ``base``'s fit images to rehearse, so the model does not forget
    them) plus every new image; validation and test stay ``base``'s, so model selection and the
    test figures mean what they meant for the model being fine-tuned. New images get one-hot
    targets where ``base`` has soft ones. The card's dataset block says what was added (``note``)."""
    n = len(base.labels)
    new = np.arange(n, n + len(images))
    labels = np.asarray(labels, dtype=np.int64)
    targets = None
    if base.targets is not None:
        targets = np.concatenate([base.targets, np.eye(len(base.classes), dtype=base.targets.dtype)[labels]])
    dataset = dict(base.card.get("dataset", {})) | {"fine_tuning": note}
    return TrainingData(classes=base.classes, images=[*base.take(np.arange(n)), *images],
                        labels=np.concatenate([base.labels, labels]),
                        split=Split(fit=np.concatenate([np.asarray(replay, dtype=np.int64), new]), val=base.split.val,
                                    test=base.split.test),
                        color=base.color, defect_classes=base.defect_classes, targets=targets,
                        normalization=base.normalization, card=base.card | {"dataset": dataset})
