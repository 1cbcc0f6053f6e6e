"""What ``edgefpga infer`` and the benchmarks feed the engine: image files, folders (class
subfolders give labels) or ``elpv:<subset>[:N][/<bins>]`` (the built-in dataset, with labels)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefpga.models.imagefiles import Skips, folder_files, read_each
from edgefpga.models.preprocess import ImageError


@dataclass
class Inputs:
    images: list  # file paths or uint8 arrays, as Engine.infer takes them
    names: list[str]
    labels: np.ndarray | None  # class index per image where known (-1: unknown)

    def __len__(self) -> int:
        return len(self.images)

    def readable(self, skips: Skips, kept: list[int], on_each: Callable[[int], object] | None = None
                 ) -> Iterator[np.ndarray]:
        """The images in order, each file read and checked as it is reached (imagefiles.read_pixels):
        unusable files go to ``skips``, the index of every image given out is appended to ``kept``.
        Lazy, so a folder of 10,000 files is never all in memory; ``on_each`` is called per input
        (a progress bar's update)."""
        for i, image in enumerate(self.images):
            if isinstance(image, np.ndarray):
                skips.seen += 1
            else:
                image = next((array for _, array in read_each([image], skips)), None)
            if image is not None:
                kept.append(i)
                yield image
            if on_each is not None:
                on_each(1)


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
    files, labels = folder_files(folder, classes)
    return Inputs(files, [str(f) for f in files], np.full(len(files), -1) if labels is None else labels)


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
