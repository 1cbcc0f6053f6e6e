"""Image files: the one reader every command uses, the one folder lister, and the record of the
files a batch leaves out.

A folder of 10,000 cell images with one truncated PNG must not lose the other 9,999: batch
commands (``infer``, ``convert``'s calibration, ``verify``'s images, ``train``) read files through
``read_each``, which names each unusable file with its reason as it goes (``Skips``), keeps the
rest, and lets the command end with a count per reason and exit status ``EXIT_SKIPPED``. With
``strict`` the first unusable file stops the batch (exit 2), as before.

What a file must be (``read_pixels``), checked in this order:

- not empty, and readable (permissions, a vanished file);
- at most ``MAX_PIXELS`` (4096 x 4096, the same limit as a ROS image message), read from the
  header of PNG, JPEG, BMP and TIFF files before anything is decoded: a 12,000 x 12,000 PNG would
  take 144 MB gray or 864 MB as 16-bit colour, more than a PYNQ board has. A model sees a few
  hundred pixels a side; resize or tile larger images first;
- decodable by OpenCV (a recognised header that does not decode: "corrupt or truncated"; no
  image format at all, e.g. text named .png: "not an image");
- 8- or 16-bit pixels (16-bit keeps its top 8 bits, ``to_8bit``), gray, BGR or BGRA (the alpha
  channel is dropped);
- at least ``MIN_SIDE`` pixels on each side: a 1 x 1 image is one grey value stretched over the
  model's input, and a model answers it with confidence about nothing.
"""

from __future__ import annotations

import struct
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from .preprocess import ImageError, as_gray_or_bgr, to_8bit

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
MAX_PIXELS = 4096 * 4096  # larger images are refused before decoding (memory), here and in ROS messages
MIN_SIDE = 8  # pixels; smaller images hold no part to inspect
EXIT_SKIPPED = 3  # a batch command finished, but left out some files (each named, counted by reason)

# reasons, the keys of the count at the end of a batch
EMPTY, UNREADABLE, NOT_IMAGE, CORRUPT = "empty file", "cannot be opened", "not an image", "corrupt or truncated"
TOO_LARGE, TOO_SMALL, PIXELS = "too large", "too small", "unsupported pixels"


class UnusableImage(ImageError):
    """A file that cannot be fed to a model; ``reason`` is one of the short reasons above."""

    def __init__(self, path: Path | str, reason: str, detail: str):
        super().__init__(f"{path}: {reason}: {detail}")
        self.path, self.reason, self.detail = str(path), reason, detail


# ---- header sizes, before decoding ----------------------------------------------------------------

def png_size(f: BinaryIO) -> tuple[int, int] | None:
    f.seek(16)
    data = f.read(8)
    return struct.unpack(">II", data) if len(data) == 8 else None


def bmp_size(f: BinaryIO) -> tuple[int, int] | None:
    f.seek(14)
    data = f.read(12)
    if len(data) < 12:
        return None
    if struct.unpack("<I", data[:4])[0] == 12:  # BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack("<HH", data[4:8])
    width, height = struct.unpack("<ii", data[4:12])
    return abs(width), abs(height)


def jpeg_size(f: BinaryIO) -> tuple[int, int] | None:
    """The first start-of-frame segment's size, walking the segments (EXIF may come first)."""
    f.seek(2)
    while True:
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        if marker[1] in (0xD8, 0x01) or 0xD0 <= marker[1] <= 0xD7:  # markers without a length
            continue
        length = f.read(2)
        if len(length) < 2:
            return None
        if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):
            data = f.read(5)
            return None if len(data) < 5 else struct.unpack(">HH", data[1:5])[::-1]
        f.seek(struct.unpack(">H", length)[0] - 2, 1)


def tiff_size(f: BinaryIO) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first IFD."""
    f.seek(0)
    order = "<" if f.read(2) == b"II" else ">"
    f.seek(4)
    f.seek(struct.unpack(order + "I", f.read(4))[0])
    count = f.read(2)
    found = {}
    for _ in range(struct.unpack(order + "H", count)[0] if len(count) == 2 else 0):
        entry = f.read(12)
        if len(entry) < 12:
            break
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            found[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), entry[8:10] if kind == 3 else entry[8:12])[0]
    return (found[256], found[257]) if len(found) == 2 else None


SIGNATURES = {b"\x89PNG\r\n\x1a\n": ("PNG", png_size), b"\xff\xd8": ("JPEG", jpeg_size), b"BM": ("BMP", bmp_size),
              b"II*\x00": ("TIFF", tiff_size), b"MM\x00*": ("TIFF", tiff_size)}


def header_size(path: Path) -> tuple[str | None, tuple[int, int] | None]:
    """(format, (width, height)) from the file's header: (None, None) for a format not known here
    (OpenCV may still read it), a size of None when the header is cut short."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if not head:
                raise UnusableImage(path, EMPTY, "0 bytes")
            for signature, (fmt, size_of) in SIGNATURES.items():
                if head.startswith(signature):
                    try:
                        return fmt, size_of(f)
                    except (struct.error, OSError, ValueError):
                        return fmt, None
    except OSError as exc:
        raise UnusableImage(path, UNREADABLE, exc.strerror or str(exc)) from exc
    return None, None


# ---- reading --------------------------------------------------------------------------------------

def check_size(path: Path, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise UnusableImage(path, TOO_LARGE, f"{width}x{height} is more than {MAX_PIXELS:,} pixels (4096x4096); "
                                             "resize or tile it first")
    if min(width, height) < MIN_SIDE:
        raise UnusableImage(path, TOO_SMALL, f"{width}x{height} is under {MIN_SIDE} pixels on a side")


def read_pixels(path: Path) -> np.ndarray:
    """An image file's pixels as stored (8- or 16-bit, gray, BGR or BGRA), checked as the module
    docstring says; ``UnusableImage`` names the file and the reason."""
    fmt, size = header_size(path)
    if size is not None:
        check_size(path, *size)  # before decoding: a huge image is refused before it is allocated
    try:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error:  # a decoder that asserts instead of returning None
        image = None
    if image is None:
        if fmt:
            raise UnusableImage(path, CORRUPT, f"{fmt} header, but the data does not decode")
        with open(path, "rb") as f:
            raise UnusableImage(path, NOT_IMAGE, f"no image format OpenCV reads (starts with {f.read(8)!r})")
    if image.dtype not in (np.uint8, np.uint16):
        raise UnusableImage(path, PIXELS, f"{image.dtype} pixels; 8- or 16-bit images only")
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise UnusableImage(path, PIXELS, f"{image.shape[2]} channels; gray, BGR or BGRA only")
    check_size(path, image.shape[1], image.shape[0])
    return image


def read_image(path: Path, bits: int = 16) -> np.ndarray:
    """An image file as 8-bit gray or BGR; 16-bit files (PNG, TIFF) keep their top 8 of ``bits``
    significant bits (``to_8bit``); an alpha channel is dropped."""
    return as_gray_or_bgr(to_8bit(read_pixels(path), bits, str(path)))


# ---- folders ---------------------------------------------------------------------------------------

def images_in(folder: Path) -> list[Path]:
    """The image files (by suffix) directly in ``folder``, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def folder_files(folder: Path, classes: list[str]) -> tuple[list[Path], np.ndarray | None]:
    """A folder's image files and their class indices: ``<folder>/<class>/*`` for the classes that
    have a subfolder, else the loose files (labels None). The one lister of image folders for
    ``infer``, calibration and verification (training has its own layouts: models/folder.py)."""
    class_dirs = [folder / c for c in classes if (folder / c).is_dir()]
    files, labels = [], []
    for d in class_dirs or [folder]:
        found = images_in(d)
        files += found
        labels += [classes.index(d.name) if class_dirs else -1] * len(found)
    if not files:
        raise ImageError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    return files, np.array(labels) if class_dirs else None


# ---- batches that go on --------------------------------------------------------------------------

class Skips:
    """The files a batch left out: each one named with its reason when it happens (on stderr), a
    count per reason at the end, and a record for the command's JSON. ``strict``: the first one
    raises instead (the batch stops, exit 2)."""

    def __init__(self, strict: bool = False, command: str = "edgefpga"):
        self.strict = strict
        self.command = command
        self.skipped: list[UnusableImage] = []
        self.seen = 0

    def add(self, exc: UnusableImage) -> None:
        if self.strict:
            raise exc
        self.skipped.append(exc)
        from tqdm import tqdm  # writes above a progress bar on a terminal

        tqdm.write(f"{self.command}: skipped {exc}", file=sys.stderr)

    def __len__(self) -> int:
        return len(self.skipped)

    def counts(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skipped).most_common())

    def summary(self) -> str:
        """One line: how many files were skipped of how many, per reason ('' when none)."""
        if not self.skipped:
            return ""
        per_reason = ", ".join(f"{reason} {n}" for reason, n in self.counts().items())
        return (f"{self.command}: skipped {len(self.skipped)} of {self.seen} files ({per_reason}); "
                f"each is named above; exit status {EXIT_SKIPPED} (--strict stops at the first)")

    def record(self) -> dict:
        """For a command's JSON: every skipped file with its reason, and the counts."""
        return {"n": len(self.skipped), "of": self.seen, "counts": self.counts(),
                "files": [{"file": s.path, "reason": s.reason, "detail": s.detail} for s in self.skipped]}

    def exit_status(self, status: int = 0) -> int:
        """``status`` (the command's own), or EXIT_SKIPPED when it was 0 and a file was skipped;
        prints the summary line."""
        if self.skipped:
            print(self.summary(), file=sys.stderr)
        return EXIT_SKIPPED if self.skipped and status == 0 else status


def read_each(paths: Iterable[Path], skips: Skips | None = None, raw: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """(index, image) for each usable file, in order: 8-bit gray or BGR (``read_image``), or with
    ``raw`` the pixels as stored (``read_pixels``: training reports its conversions). The others go
    to ``skips``; without one, the first unusable file raises, as a strict batch does."""
    skips = skips if skips is not None else Skips(strict=True)
    read = read_pixels if raw else read_image
    for i, path in enumerate(paths):
        skips.seen += 1
        try:
            yield i, read(Path(path))
        except UnusableImage as exc:
            skips.add(exc)
