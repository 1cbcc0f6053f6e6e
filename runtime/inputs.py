"""What ``edgefpga infer`` and the benchmarks feed the engine: image files, folders (class
subfolders give labels) or ``elpv:<subset>[:N][/<bins>]`` (the built-in dataset, with labels)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefpga.models.preprocess import IMAGE_SUFFIXES, ImageError


@dataclass
class Inputs:
    images: list  # file paths or uint8 arrays, as Engine.infer takes them
    names: list[str]
    labels: np.ndarray | None  # class index per image where known (-1: unknown)

    def __len__(self) -> int:
        return len(self.images)


def elpv_inputs(spec: str, classes: list[str] | None = None) -> Inputs:
    """``elpv:test``, ``elpv:test:50`` (the first 50 of the subset, in the split's order) or
    ``elpv:test/type-defect`` (other labels of the same cells: models.elpv.select)."""
    from edgefpga.models import elpv

    data = elpv.load()
    try:
        idx, labels = elpv.select(spec, classes, data)
    except ValueError as exc:
        raise ImageError(str(exc)) from exc
    subset = spec.removeprefix("elpv:").split("/")[0].split(":")[0]
    return Inputs(list(data.images[idx]), [f"elpv:{subset}[{i}]" for i in idx], labels)


def folder_inputs(folder: Path, classes: list[str]) -> Inputs:
    files, labels = [], []
    class_dirs = [folder / c for c in classes if (folder / c).is_dir()]
    for d, label in ([(d, classes.index(d.name)) for d in class_dirs] or [(folder, -1)]):
        found = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [label] * len(found)
    if not files:
        raise ImageError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return Inputs(files, [str(f) for f in files], np.array(labels))


def collect_inputs(sources: list[str], classes: list[str]) -> Inputs:
    """Every source in order; labels only where every image has one."""
    parts = []
    for source in sources:
        path = Path(source)
        if source.startswith("elpv:"):
            parts.append(elpv_inputs(source, classes))
        elif path.is_dir():
            parts.append(folder_inputs(path, classes))
        elif path.is_file():
            parts.append(Inputs([path], [str(path)], np.array([-1])))
        else:
            raise ImageError(f"{source}: no such file or folder (or elpv:<subset>[:N][/<bins>])")
    labels = np.concatenate([p.labels for p in parts])
    return Inputs([i for p in parts for i in p.images], [n for p in parts for n in p.names],
                  labels if (labels >= 0).all() else None)
