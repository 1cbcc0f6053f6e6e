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

from .datasets import Split, TrainingData
from .datasets import stratified_split as split_by_strata

__all__ = ["BINS", "CLASSES", "ElpvData", "Split", "load", "select", "split", "stratified_split", "subset",
           "training_data"]

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
    """Load the dataset from the installed ``elpv-dataset`` package (no network access), decoded
    once per machine: the arrays are kept in the edgefpga cache (edgefpga/cache.py) under a digest
    of the package's file list and hashes, so another version or a changed file decodes again."""
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError as exc:  # pragma: no cover - setup installs it
        raise RuntimeError(
            "the ELPV dataset package is missing: run `make setup` or `pip install elpv-dataset`"
        ) from exc
    key = package_key()
    cached = load_cached(key) if key else None
    if cached is not None:
        return cached
    images, proba, types = load_dataset()
    data = ElpvData(np.asarray(images), np.asarray(proba, dtype=np.float64), np.asarray(types))
    if key:
        from edgefpga.cache import store_array

        for name in CACHED_ARRAYS:
            store_array("elpv", key, f"{name}.npy", getattr(data, name))
    return data


CACHED_ARRAYS = ("images", "proba", "types")


def package_key() -> str | None:
    """A digest of the installed package's version and RECORD (every file with its sha256)."""
    from importlib.metadata import PackageNotFoundError, distribution

    from edgefpga.cache import digest

    try:
        dist = distribution("elpv-dataset")
    except PackageNotFoundError:
        return None
    record = dist.read_text("RECORD")
    return digest("elpv", dist.version, record) if record else None


def load_cached(key: str) -> ElpvData | None:
    from edgefpga.cache import cached_file

    paths = [cached_file("elpv", key, f"{name}.npy") for name in CACHED_ARRAYS]
    if any(p is None for p in paths):
        return None
    try:
        images, proba, types = (np.load(p, allow_pickle=False) for p in paths)
    except (OSError, ValueError):  # a damaged file: decode again (and overwrite it)
        return None
    return ElpvData(images, proba, types)


def strata_of(proba: np.ndarray, types: np.ndarray) -> np.ndarray:
    """Stratum per cell: the four defect-probability levels crossed with mono/poly."""
    return np.round(np.asarray(proba) * 3).astype(int) * 2 + (np.asarray(types) == "poly").astype(int)


def stratified_split(
    proba: np.ndarray, types: np.ndarray, test_frac: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The contract split of DESIGN.md: sorted (train, test) indices, stratified by defect level
    x cell type (the generic stratified split with these strata is that code, step for step)."""
    return split_by_strata(strata_of(proba, types), test_frac, seed)


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
    if name not in ("train", "fit", "val", "test"):
        raise ValueError(f"unknown ELPV subset {name!r}; choose one of ['fit', 'test', 'train', 'val']")
    return parts.subset(name)


def _defect(p: float) -> str:
    return "defective" if p >= DEFECT_THRESHOLD else "functional"


# class name per cell (defect probability p, cell type t) for other label sets of the same cells;
# "defective" is the binary contract's rule (an expert probability >= 0.5: 2/3 and 1)
BINS = {
    "type-defect": lambda p, t: f"{t}_{_defect(p)}",
    "defect": lambda p, t: _defect(p),
    "type": lambda p, t: str(t),
    "level": lambda p, t: f"level_{round(p * 3)}of3",
}


def bin_names(bins: str, data: ElpvData, idx: np.ndarray) -> np.ndarray:
    if bins not in BINS:
        raise ValueError(f"unknown ELPV bins {bins!r}; choose one of {sorted(BINS)}")
    return np.array([BINS[bins](p, t) for p, t in zip(data.proba[idx], data.types[idx])])


def select(spec: str, classes: list[str] | None = None, data: ElpvData | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices and labels of an image source ``elpv:<subset>[:N][/<bins>]``: the subset's cells
    (the first N, in the split's order), labelled with the binary contract classes, or with
    ``bins`` (e.g. ``elpv:test/type-defect``: mono/poly x functional/defective) as indices into
    ``classes`` (the model's). The one parser of ELPV sources (infer, convert, verify, bench)."""
    data = data or load()
    body, _, bins = spec.removeprefix("elpv:").partition("/")
    name, *count = body.split(":")
    idx = subset(name, data)
    if count:
        idx = idx[: int(count[0])]
    if not bins:
        return idx, data.labels[idx]
    names = bin_names(bins, data, idx)
    missing = sorted(set(names) - set(classes or []))
    if missing:
        raise ValueError(f"{spec}: the model has no class {missing[0]!r} (its classes: {classes})")
    return idx, np.array([classes.index(n) for n in names], dtype=np.int64)


def training_data() -> TrainingData:
    """ELPV as a source of the training pipeline: binary labels, the experts' probabilities as
    soft targets, the contract split, the normalization every ELPV model has had."""
    data = load()
    parts = split(data)
    proba = data.proba.astype(np.float32)
    return TrainingData(
        classes=CLASSES, images=data.images, labels=data.labels, split=parts, color="gray",
        defect_classes=CLASSES[1:], targets=np.stack([1 - proba, proba], axis=1),
        normalization=(0.5, 0.25),
        card={"task": "solar-cell electroluminescence inspection: functional vs defective cell",
              "dataset": {
                  "name": "ELPV", "source": SOURCE, "license": LICENSE,
                  "license_note": "Trained on CC BY-NC-SA 4.0 data: these weights are for non-commercial use "
                                  "and derived works must be shared alike.",
                  "label": "defective when the expert defect probability is >= 0.5",
                  "split": {"rule": "DESIGN.md stratified_split(test_frac=0.25, seed=0)", "train": len(parts.train),
                            "test": len(parts.test),
                            "validation": "15% of train, same stratification, seed 1 (model selection, bias "
                                          "calibration)"}}})
