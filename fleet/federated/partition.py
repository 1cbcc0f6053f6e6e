"""ELPV's training part split into sites that differ as plants do, written as site folders.

Why by cell type: a plant buys one kind of panel, so one site sees mostly monocrystalline
cells, another mostly polycrystalline, and a small one a mix; defect rates then differ with the
type too (non-IID sites, the case FedProx is for). Only the contract's train part is split (fit
+ validation, DESIGN.md contract 3): the 654 test cells stay out of every site, for the central
evaluation. The record (``partition.json``) holds the seed, the fractions and every site's ELPV
indices, so the same sites can be rebuilt and checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PARTITION_RECORD = "partition.json"
BINS = "defect"  # class folders functional/ and defective/: the binary contract's classes
# share of each cell type's training cells that goes to each site (each column sums to 1)
SITES = {
    "site_mono": {"mono": 0.85, "poly": 0.10},
    "site_poly": {"mono": 0.10, "poly": 0.85},
    "site_mixed": {"mono": 0.05, "poly": 0.05},
}


def assign(types: np.ndarray, idx: np.ndarray, seed: int, sites: dict = SITES) -> dict[str, np.ndarray]:
    """Site -> sorted ELPV indices: per cell type, a seeded permutation cut by the sites' fractions."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {name: [] for name in sites}
    for kind in ("mono", "poly"):
        cells = idx[types[idx] == kind]
        cells = cells[rng.permutation(len(cells))]
        cuts = np.cumsum([sites[name][kind] for name in sites])
        bounds = np.round(np.concatenate([[0.0], cuts]) * len(cells)).astype(int)
        for name, lo, hi in zip(sites, bounds[:-1], bounds[1:]):
            out[name].append(cells[lo:hi])
    return {name: np.sort(np.concatenate(parts)) for name, parts in out.items()}


def limit_site(idx: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """At most ``limit`` cells of a site, a seeded sample (small runs: tests, quick benches)."""
    if limit is None or len(idx) <= limit:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, limit, replace=False))


def site_summary(data, idx: np.ndarray) -> dict:
    types = data.types[idx]
    labels = data.labels[idx]
    return {"n": int(len(idx)), "mono": int((types == "mono").sum()), "poly": int((types == "poly").sum()),
            "defective": int(labels.sum()), "functional": int((labels == 0).sum())}


def partition_elpv(out: str | Path, seed: int = 0, limit: int | None = None) -> dict:
    """Write ``out/<site>/{functional,defective}/elpv_<i>.png`` for each site and
    ``out/partition.json``; returns the record. ``limit``: at most that many cells per site."""
    from edgefpga.models import elpv
    from edgefpga.models.datasets import staged_folder
    from edgefpga.models.folder import write_cells, write_export_record

    data = elpv.load()
    train = elpv.split(data).train
    sites = {name: limit_site(idx, limit, seed + k) for k, (name, idx) in enumerate(assign(data.types, train,
                                                                                            seed).items())}
    record = {"source": "ELPV contract train split (fit + validation; the 654 test cells are in no site)",
              "seed": seed, "limit": limit, "bins": BINS, "fractions": SITES,
              "sites": {name: {"summary": site_summary(data, idx), "indices": idx.tolist()}
                        for name, idx in sites.items()}}
    with staged_folder(out) as staging:
        for name, idx in sites.items():
            write_cells(staging / name, data, idx, BINS)
            write_export_record(staging / name, {"bins": BINS, "split": False, "limit": limit, "seed": seed,
                                                 "federated_site": name})
        (staging / PARTITION_RECORD).write_text(json.dumps(record) + "\n")
    return record


def check_partition(out: str | Path) -> None:
    """The site folders still hold exactly the recorded cells (after copying them to the sites)."""
    from edgefpga.models.datasets import DatasetError

    root = Path(out)
    record = json.loads((root / PARTITION_RECORD).read_text())
    for name, site in record["sites"].items():
        found = sorted(int(p.stem.split("_")[1]) for p in (root / name).glob("*/elpv_*.png"))
        if found != sorted(site["indices"]):
            raise DatasetError(f"{root / name}: holds {len(found)} cells, the partition record {len(site['indices'])}"
                               " (or others): rebuild it with edgefpga fed partition")
