"""Image sets for calibration and verification, as the accelerator sees them: (N, C, H, W) uint8
after the card's color conversion and INTER_AREA resize.

Sources: ``elpv:<subset>`` (the built-in dataset: ``train`` for calibration, ``test`` for
verification), ``modules:<subset>:<N>[:<seed>]`` (module images composed from ELPV cells, for a
detector), a folder of images (``<folder>/<class name>/*.png`` gives labels, loose files
give none), or an ``.npz`` with ``images`` (N, H, W[, C]) uint8 and optionally ``labels``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefpga.models import elpv
from edgefpga.models.card import InputSpec
from edgefpga.models.imagefiles import Skips, folder_files, read_each
from edgefpga.models.preprocess import ImageError, resize_batch, resize_u8

__all__ = ["ImageSet", "load_image_set"]  # image files are read by models.imagefiles


@dataclass
class ImageSet:
    pixels: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.pixels)

    def take(self, n: int | None, seed: int = 0) -> "ImageSet":
        """A fixed random sample of ``n`` (all when ``n`` is None or large enough), kept in order."""
        if n is None or n >= len(self):
            return self
        return self.subset(sample_indices(len(self), n, seed), f"{self.source} ({n} of {len(self)}, seed {seed})")

    def subset(self, idx: np.ndarray, source: str | None = None) -> "ImageSet":
        """The images at ``idx`` (the same set when that is all of them)."""
        if len(idx) == len(self):
            return self
        labels = None if self.labels is None else self.labels[idx]
        return ImageSet(self.pixels[idx], labels, source or f"{self.source} ({len(idx)} of {len(self)})")


def sample_indices(n: int, sample: int | None, seed: int = 0) -> np.ndarray:
    """A fixed random sample of ``sample`` of ``n`` indices, in order (all of them when None)."""
    if sample is None or sample >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))


def folder_set(folder: Path, spec: InputSpec, classes: list[str], skips: Skips | None = None) -> ImageSet:
    """A folder's images (imagefiles.folder_files), each resized as it is read (a list: images
    may differ in size); unusable files go to ``skips`` (none: the first one raises)."""
    files, labels = folder_files(folder, classes)
    kept, pixels = [], []
    for i, image in read_each(files, skips):
        kept.append(i)
        pixels.append(resize_u8(image, spec, str(files[i])))
    if not pixels:
        raise ImageError(f"{folder}: none of its {len(files)} image files is usable (each is named above)")
    return ImageSet(np.stack(pixels), None if labels is None else labels[kept], str(folder))


def npz_set(path: Path, spec: InputSpec) -> ImageSet:
    try:
        data = np.load(path)
        images = data["images"]
    except (OSError, ValueError, KeyError) as exc:
        raise ImageError(f"{path}: expected an .npz holding 'images' (N, H, W[, C]) uint8 ({exc})") from exc
    labels = data["labels"].astype(int) if "labels" in data else None
    return ImageSet(resize_batch(images, spec), labels, str(path))


def elpv_set(source: str, spec: InputSpec, classes: list[str]) -> ImageSet:
    """``elpv:<subset>[:N][/<bins>]`` (models.elpv.select) as an image set."""
    data = elpv.load()
    try:
        idx, labels = elpv.select(source, classes, data)
    except ValueError as exc:
        raise ImageError(str(exc)) from exc
    return ImageSet(resize_batch(data.images[idx], spec), labels, f"ELPV {source.removeprefix('elpv:')} split")


def modules_set(source: str, spec: InputSpec) -> ImageSet:
    """``modules:<subset>:<N>[:<seed>]``: EL module images composed from ELPV cells (models/modules.py),
    no labels (a detector's targets are maps; verify compares whole maps)."""
    from edgefpga.models import modules

    try:
        found = modules.select(source)
    except ValueError as exc:
        raise ImageError(str(exc)) from exc
    return ImageSet(resize_batch([m.image for m in found], spec), None, f"ELPV module images {source}")


def load_image_set(source: str, spec: InputSpec, classes: list[str], skips: Skips | None = None) -> ImageSet:
    """An image set from ``elpv:<subset>``, ``modules:<subset>:<N>``, a folder or an .npz (see module
    docstring). A folder's unusable files go to ``skips``; without it the first one raises."""
    if source.startswith("elpv:"):
        return elpv_set(source, spec, classes)
    if source.startswith("modules:"):
        return modules_set(source, spec)
    path = Path(source)
    if path.is_dir():
        return folder_set(path, spec, classes, skips)
    if path.suffix == ".npz" and path.is_file():
        return npz_set(path, spec)
    raise ImageError(f"{source}: not an image folder, an .npz file or elpv:<subset>[:N][/<bins>]")
