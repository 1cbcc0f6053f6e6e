"""A user's own images as training data, and ELPV written out as such a folder.

Layouts ``edgefpga train`` reads (class names are the labels; they must be Python identifiers,
because they become names in the card, in ROS messages and in CSV columns):

    <folder>/<class>/<image>                    split here: stratified by class, seeded
    <folder>/train/<class>/..., val/..., test/...  the user's own split (no val/: taken from train)
    <file>.csv with rows path,label             paths relative to the CSV; a header row is optional

A subfolder named ``unlabeled`` is not a class: it holds images still waiting for a label (the
fleet's sample store keeps them there) and training skips it.

Images may be 8- or 16-bit (16-bit keeps its top 8 bits, ``preprocess.to_8bit``), gray or colour
(the model is gray unless an image really is colour, or ``color="bgr"`` is asked for) and of any
size (each is resized to the model's input with INTER_AREA, aspect ratio not kept). Every such
conversion is stated in the card's ``dataset.conversions``. What cannot be used is refused before
any training, naming the file or folder.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np

from .datasets import DatasetError, Split, TrainingData, staged_folder, stratified_split
from .imagefiles import IMAGE_SUFFIXES, Skips, images_in, read_each, read_pixels
from .preprocess import as_gray_or_bgr, to_8bit

SPLIT_NAMES = ("train", "val", "test")
TEST_FRAC = 0.2
VAL_FRAC = 0.15  # of the train part
MIN_PER_CLASS = 3  # one image each for fitting, validation and test
UNLABELED = "unlabeled"  # images waiting for a label (fleet/store.py): never a class


def class_folders(root: Path) -> dict[str, list[Path]]:
    """Class name -> image files of ``root``'s subfolders; an empty class is an error."""
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    classes = {d.name: images_in(d) for d in sorted(root.iterdir())
               if d.is_dir() and not d.name.startswith(".") and d.name != UNLABELED}
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise DatasetError(f"{root / empty[0]}: class folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return classes


def scan_folder(root: Path) -> tuple[list[tuple[Path, str]], dict[str, list[int]] | None]:
    """(file, class) pairs and, where the folder has its own train/val/test subfolders, the
    indices of each part."""
    top = {d.name for d in root.iterdir() if d.is_dir()} if root.is_dir() else set()
    if {"train", "test"} <= top:
        entries: list[tuple[Path, str]] = []
        parts: dict[str, list[int]] = {}
        for part in SPLIT_NAMES:
            if part in top:
                found = [(f, c) for c, files in class_folders(root / part).items() for f in files]
                parts[part] = list(range(len(entries), len(entries) + len(found)))
                entries += found
        return entries, parts
    return [(f, c) for c, files in class_folders(root).items() for f in files], None


def read_csv_labels(path: Path) -> list[tuple[Path, str]]:
    """(file, class) pairs from a CSV of ``path,label``; every file must exist."""
    entries = []
    with open(path, newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or (line == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]):
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise DatasetError(f"{path}:{line}: expected 'path,label', got {row!r}")
            file = (path.parent / row[0].strip()).resolve()
            if not file.is_file():
                raise DatasetError(f"{path}:{line}: {row[0].strip()!r} names a missing file ({file})")
            entries.append((file, row[1].strip()))
    if not entries:
        raise DatasetError(f"{path}: no rows of path,label")
    return entries


def check_classes(names: list[str], counts: Counter, source: str, order: list[str] | None) -> list[str]:
    """The class order (``order``, else sorted): at least two classes, identifiers only."""
    bad = [n for n in names if not n.isidentifier()]
    if bad:
        raise DatasetError(f"{source}: class name {bad[0]!r} is not a valid identifier (letters, digits and _, "
                           "not starting with a digit): rename the folder or label, e.g. "
                           f"{'_'.join(''.join(ch if ch.isalnum() else ' ' for ch in bad[0]).split()) or 'class_a'!r}")
    if len(names) < 2:
        raise DatasetError(f"{source}: found {len(names)} class ({', '.join(names) or 'none'}); a classifier needs "
                           "at least two (one subfolder per class)")
    if order is None:
        return sorted(names)
    if sorted(order) != sorted(names):
        raise DatasetError(f"{source}: --classes {order} do not match the classes found {sorted(names)}")
    return list(order)


def read_images(files: list[Path], color: str | None) -> tuple[list[np.ndarray], str, list[str]]:
    """Every image as 8-bit gray or BGR, the model colour (``color`` or: gray unless any image
    really is colour) and the conversions made, each naming an example file; the first unusable
    file raises."""
    return convert_images(files, [read_pixels(f) for f in files], color)


def usable_entries(entries: list[tuple[Path, str]], parts: dict[str, list[int]] | None, skips: Skips | None
                   ) -> tuple[list[tuple[Path, str]], dict[str, list[int]] | None, list[np.ndarray]]:
    """The entries whose files are usable images, the user's parts renumbered to them, and their
    pixels as stored; the others go to ``skips`` (none: the first one raises)."""
    kept, raws = [], []
    for i, raw in read_each([f for f, _ in entries], skips, raw=True):
        kept.append(i)
        raws.append(raw)
    if parts is not None:
        new = {old: k for k, old in enumerate(kept)}
        parts = {part: [new[i] for i in idx if i in new] for part, idx in parts.items()}
    return [entries[i] for i in kept], parts, raws


def convert_images(files: list[Path], raws: list[np.ndarray], color: str | None
                   ) -> tuple[list[np.ndarray], str, list[str]]:
    """``read_images`` on pixels already read (``raws``, one per file)."""
    images, sixteen, colour = [], [], []
    for f, raw in zip(files, raws):
        if raw.dtype == np.uint16:
            sixteen.append(f)
        image = as_gray_or_bgr(to_8bit(raw, 16, str(f)))
        if image.ndim == 3 and not (np.array_equal(image[..., 0], image[..., 1])
                                    and np.array_equal(image[..., 0], image[..., 2])):
            colour.append(f)
        images.append(image)
    color = color or ("bgr" if colour else "gray")
    notes = []
    if sixteen:
        notes.append(f"{len(sixteen)} 16-bit image(s) scaled to 8 bits (top 8 bits), e.g. {sixteen[0]}")
    if color == "gray" and any(im.ndim == 3 for im in images):
        notes.append("colour files with equal channels read as gray" if not colour else
                     f"{len(colour)} colour image(s) converted to gray, e.g. {colour[0]}")
    if color != "gray" and any(im.ndim == 2 for im in images):
        notes.append("gray images repeated into three channels (the model takes colour)")
    sizes = Counter(f"{im.shape[1]}x{im.shape[0]}" for im in images)
    if len(sizes) > 1:
        odd = next(f for f, im in zip(files, images) if f"{im.shape[1]}x{im.shape[0]}" != sizes.most_common(1)[0][0])
        notes.append(f"images differ in size ({', '.join(f'{s}: {n}' for s, n in sizes.most_common())}; e.g. "
                     f"{odd}): each is resized to the model input with INTER_AREA, aspect ratio not kept")
    return images, color, notes


def split_parts(labels: np.ndarray, parts: dict[str, list[int]] | None, classes: list[str], seed: int,
                test_frac: float, val_frac: float, source: str) -> Split:
    """The user's own parts (validation taken from train when there is none), else a split
    stratified by class with ``seed``; every part holds every class."""
    if parts is None:
        counts = np.bincount(labels, minlength=len(classes))
        if counts.min() < MIN_PER_CLASS:
            k = int(counts.argmin())
            raise DatasetError(f"{source}: class {classes[k]!r} has {counts[k]} image(s); at least {MIN_PER_CLASS} "
                               "are needed (one each for training, validation and test)")
        train, test = stratified_split(labels, test_frac, seed, min_test=1)
    else:
        train, test = np.asarray(parts["train"]), np.asarray(parts["test"])
    if parts is not None and "val" in parts:
        return Split(fit=train, val=np.asarray(parts["val"]), test=test)
    fit_local, val_local = stratified_split(labels[train], val_frac, seed + 1, min_test=1)
    return Split(fit=train[fit_local], val=train[val_local], test=test)


def training_data(source: str | Path, classes: list[str] | None = None, defect_classes: list[str] | None = None,
                  color: str | None = None, seed: int = 0, test_frac: float = TEST_FRAC,
                  val_frac: float = VAL_FRAC, skips: Skips | None = None) -> TrainingData:
    """A folder (class subfolders, optionally inside train/val/test) or a CSV as training data.
    Files that are no usable image go to ``skips`` and are left out before the split is made
    (recorded in the card's ``dataset.skipped``); without ``skips`` the first one raises."""
    path = Path(source).resolve()
    kind = "csv" if path.suffix.lower() == ".csv" and path.is_file() else "folder"
    entries, parts = (read_csv_labels(path), None) if kind == "csv" else scan_folder(path)
    listed = Counter(c for _, c in entries)
    check_classes(list(listed), listed, str(path), classes)  # a bad class name is refused before any image is read
    entries, parts, raws = usable_entries(entries, parts, skips)
    counts = Counter(c for _, c in entries)
    order = check_classes(list(counts), counts, str(path), classes)
    defects = order[1:] if defect_classes is None else list(defect_classes)
    unknown = [c for c in defects if c not in order]
    if unknown or not defects:
        raise DatasetError(f"{path}: defect classes {defects} must be a non-empty subset of the classes {order}")
    labels = np.array([order.index(c) for _, c in entries])
    split = split_parts(labels, parts, order, seed, test_frac, val_frac, str(path))
    images, color, notes = convert_images([f for f, _ in entries], raws, color)
    rule = ("the folder's own train/val/test subfolders" if parts is not None and "val" in parts else
            "the folder's own train/test subfolders; validation stratified by class from train" if parts else
            "stratified by class")
    provenance = export_provenance(path) if kind == "folder" else {}
    dataset = {
        "name": path.stem if kind == "csv" else path.name, "kind": kind, "path": str(path), "color": color,
        "license": provenance.get("dataset_license") or "the user's own data",
        **({"source": provenance["dataset_source"]} if provenance.get("dataset_source") else {}),
        "label": "the CSV's label column" if kind == "csv" else "the class folder",
        "class_counts": {c: int(counts[c]) for c in order}, "conversions": notes,
        **({"skipped": skips.record()} if skips else {}),
        "split": {"rule": rule, "seed": seed, "test_frac": test_frac, "val_frac": val_frac, **split.sizes()},
    }
    return TrainingData(classes=order, images=images, labels=labels, split=split, color=color,
                        defect_classes=[c for c in order if c in defects],
                        card={"task": f"inspection: {', '.join(order)}", "dataset": dataset,
                              **{k: provenance[k] for k in ("calibration", "verification") if k in provenance}})


def training_data_from_record(dataset: dict, classes: list[str], defect_classes: list[str],
                              source: str) -> TrainingData:
    """The data a card's ``dataset`` block recorded, read again with the same split."""
    path = Path(dataset.get("path", ""))
    if not path.exists():
        raise DatasetError(f"{source}: the training data {path} is not here any more; evaluate on a folder with "
                           "edgefpga infer <folder> --model ...")
    split = dataset.get("split", {})
    # files skipped in training are skipped again (named on stderr), so the split comes out the same
    skips = Skips(command=f"edgefpga ({source})") if dataset.get("skipped") else None
    return training_data(path, classes, defect_classes, dataset.get("color"), split.get("seed", 0),
                         split.get("test_frac", TEST_FRAC), split.get("val_frac", VAL_FRAC), skips)


# ---- ELPV as a user's folder ------------------------------------------------------------------

def export_elpv(out: str | Path, bins: str = "type-defect", with_split: bool = False,
                limit: int | None = None, seed: int = 0) -> dict[str, int]:
    """Write ELPV cells as ``<out>/<bin>/elpv_<index>.png`` (or ``<out>/<part>/<bin>/...`` with
    the contract split as train/val/test folders), as a user's folder would be. ``limit`` keeps
    at most that many cells per bin (and part), a seeded sample. Returns files per folder."""
    from . import elpv

    if bins not in elpv.BINS:
        raise DatasetError(f"unknown bins {bins!r}: choose one of {sorted(elpv.BINS)}")
    data = elpv.load()
    parts = elpv.split(data)
    everything = {"": np.arange(len(data.proba))}
    groups = {"train": parts.fit, "val": parts.val, "test": parts.test} if with_split else everything
    written: Counter = Counter()
    with staged_folder(out) as staging:
        for part, idx in groups.items():
            counts = write_cells(staging / part, data, idx, bins, limit, seed)
            written.update({f"{part}/{name}".lstrip("/"): n for name, n in counts.items()})
        write_export_record(staging, {"bins": bins, "split": with_split, "limit": limit, "seed": seed})
    return dict(written)


def write_cells(root: Path, data, idx: np.ndarray, bins: str, limit: int | None = None,
                seed: int = 0) -> dict[str, int]:
    """ELPV cells ``idx`` as ``root/<bin>/elpv_<index>.png`` (at most ``limit`` per bin, a seeded
    sample): the one writer of ELPV as a user's folder, for export_elpv and the federated sites
    (fleet/federated/partition.py). Returns files per bin."""
    import cv2

    from . import elpv

    names = elpv.bin_names(bins, data, idx)
    written = {}
    for name in sorted(set(names)):
        chosen = idx[names == name]
        if limit is not None and len(chosen) > limit:
            chosen = np.sort(np.random.default_rng(seed).choice(chosen, limit, replace=False))
        folder = root / name
        folder.mkdir(parents=True)
        for i in chosen:
            cv2.imwrite(str(folder / f"elpv_{i:04d}.png"), data.images[i])
        written[name] = len(chosen)
    return written


def write_export_record(root: Path, record: dict) -> None:
    """``edgefpga-export.json``: where the images came from (the card's dataset provenance)."""
    from . import elpv

    (root / EXPORT_RECORD).write_text(json.dumps(
        {"elpv": record | {"source": elpv.SOURCE, "license": elpv.LICENSE}}, indent=2) + "\n")


EXPORT_RECORD = "edgefpga-export.json"  # written by export_elpv: where the images came from


def export_provenance(root: Path) -> dict:
    """Card fields of a folder that export_elpv wrote with the contract split: the dataset's
    license, and ELPV sources for calibration and verification (the same cells, labelled with the
    same bins: portable, unlike the folder's path)."""
    record = root / EXPORT_RECORD
    if not record.is_file():
        return {}
    exported = json.loads(record.read_text()).get("elpv", {})
    fields: dict = {"dataset_license": exported.get("license"), "dataset_source": exported.get("source")}
    if exported.get("split"):
        fields |= {"calibration": f"elpv:train/{exported['bins']}", "verification": f"elpv:test/{exported['bins']}"}
    return fields
