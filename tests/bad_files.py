"""A folder of image files as a plant's disk holds them: good cells beside the files a batch
must survive (issue 31, item 4). Written with OpenCV and numpy into a test's own folder."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# file name -> the reason models/imagefiles.py gives for leaving it out
BAD = {
    "empty.png": "empty file",
    "truncated.png": "corrupt or truncated",
    "text.png": "not an image",
    "tiny_1x1.png": "too small",
    "huge_12000x12000.png": "too large",
}
CONVERTED = ("sixteen_bit.png", "rgba.png")  # usable after conversion (top 8 bits; alpha dropped)


def write_mixed_folder(folder: Path, good: list[np.ndarray]) -> list[str]:
    """``good`` 8-bit cells as good_<i>.png, the files of BAD and CONVERTED beside them; returns
    the names of the usable files (good and converted), sorted."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, cell in enumerate(good):
        cv2.imwrite(str(folder / f"good_{i}.png"), cell)
    (folder / "empty.png").write_bytes(b"")
    whole = cv2.imencode(".png", good[0])[1].tobytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (folder / "text.png").write_text("serial,label\nA1,good\n")
    cv2.imwrite(str(folder / "sixteen_bit.png"), good[1].astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "rgba.png"), cv2.cvtColor(good[2], cv2.COLOR_GRAY2BGRA))
    cv2.imwrite(str(folder / "tiny_1x1.png"), np.full((1, 1), 128, np.uint8))
    # 12,000 x 12,000 gray: a few hundred kB as PNG, 144 MB once decoded
    cv2.imwrite(str(folder / "huge_12000x12000.png"), np.zeros((12_000, 12_000), np.uint8))
    return sorted([f"good_{i}.png" for i in range(len(good))] + list(CONVERTED))
