"""sensor_msgs/Image and CompressedImage <-> numpy, with the checks a node needs before it trusts
a message: encoding, size, row step, data length. Pure numpy + OpenCV (no cv_bridge on PyPI).

A bad message raises ``BadImage`` naming the problem; the node counts it by ``kind`` and goes on.
"""

from __future__ import annotations

import cv2
import numpy as np

from edgefpga.models.imagefiles import MAX_PIXELS  # one limit for files and messages
from edgefpga.models.preprocess import ImageError, to_8bit

CHANNELS = {"mono8": 1, "bgr8": 3, "rgb8": 3, "mono16": 1}
BYTES_PER_CHANNEL = {"mono16": 2}  # the others: 1


class BadImage(ValueError):
    """A message that cannot become an image; ``kind`` is the diagnostics counter it goes to."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def image_to_array(msg, mono16_bits: int = 16) -> np.ndarray:
    """A sensor_msgs/Image as an 8-bit gray (H, W) or BGR (H, W, 3) array (a view where possible).
    mono16 (either byte order) keeps the top 8 of ``mono16_bits`` significant bits (to_8bit)."""
    if msg.encoding not in CHANNELS:
        raise BadImage("encoding", f"encoding {msg.encoding!r} is not supported (use {', '.join(CHANNELS)})")
    height, width, step = msg.height, msg.width, msg.step
    channels = CHANNELS[msg.encoding] * BYTES_PER_CHANNEL.get(msg.encoding, 1)  # bytes per pixel
    if height == 0 or width == 0:
        raise BadImage("size", f"zero-size image ({width}x{height})")
    if height * width > MAX_PIXELS:
        raise BadImage("size", f"image of {width}x{height} is larger than {MAX_PIXELS:,} pixels")
    if step < width * channels:
        raise BadImage("layout", f"step {step} is shorter than width x channels = {width * channels}")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < height * step:
        raise BadImage("layout", f"data holds {data.size} bytes, fewer than height x step = {height * step}")
    rows = data[: height * step].reshape(height, step)[:, : width * channels]
    if msg.encoding == "mono16":
        pixels = np.ascontiguousarray(rows).view(">u2" if msg.is_bigendian else "<u2").astype(np.uint16)
        return sixteen_to_8bit(pixels, mono16_bits)
    if channels == 1:
        return rows
    image = rows.reshape(height, width, 3)
    return image[:, :, ::-1] if msg.encoding == "rgb8" else image


def sixteen_to_8bit(pixels: np.ndarray, bits: int) -> np.ndarray:
    try:
        return to_8bit(pixels, bits, "16-bit image")
    except ImageError as exc:
        raise BadImage("encoding", str(exc)) from exc


def compressed_to_array(msg, mono16_bits: int = 16) -> np.ndarray:
    """A sensor_msgs/CompressedImage (JPEG, PNG, ...) decoded with OpenCV to gray or BGR; a 16-bit
    PNG keeps the top 8 of ``mono16_bits`` significant bits, as a mono16 Image does."""
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise BadImage("compressed", "empty compressed image")
    try:
        header = cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8)  # cheap probe of the size before the full decode
    except cv2.error:  # smaller than 8 pixels a side: nothing to reduce, and nothing large to fear
        header = np.zeros((1, 1), np.uint8)
    if header is None:
        raise BadImage("compressed", f"compressed data ({msg.format or 'no format'}, {data.size} bytes) does not decode")
    if header.shape[0] * header.shape[1] * 64 > MAX_PIXELS:
        raise BadImage("size", f"compressed image of about {header.shape[1] * 8}x{header.shape[0] * 8} is too large")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise BadImage("compressed", f"compressed data ({msg.format or 'no format'}, {data.size} bytes) does not decode")
    if image.dtype != np.uint8:
        image = sixteen_to_8bit(image, mono16_bits)
    return image[:, :, :3] if image.ndim == 3 and image.shape[2] == 4 else image


def array_to_image(image: np.ndarray, msg, encoding: str | None = None):
    """Fill a sensor_msgs/Image from an 8-bit gray or BGR array, or a 16-bit gray one (mono16,
    little-endian); return it."""
    gray = image.ndim == 2
    if image.dtype == np.uint16:
        msg.encoding, image = "mono16", image.astype("<u2")
    else:
        msg.encoding = encoding or ("mono8" if gray else "bgr8")
    if msg.encoding == "rgb8":
        image = image[:, :, ::-1]
    msg.height, msg.width = image.shape[:2]
    msg.step = msg.width * CHANNELS[msg.encoding] * BYTES_PER_CHANNEL.get(msg.encoding, 1)
    msg.is_bigendian = 0
    msg.data = np.ascontiguousarray(image).tobytes()
    return msg


def grid_cells(image: np.ndarray, rows: int, cols: int) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """Split an image into rows x cols cells, row-major: (cell, (x, y, width, height)).
    The last row and column take the remainder, so every pixel is in one cell."""
    height, width = image.shape[:2]
    ys = [height * r // rows for r in range(rows + 1)]
    xs = [width * c // cols for c in range(cols + 1)]
    return [(image[ys[r]:ys[r + 1], xs[c]:xs[c + 1]], (xs[c], ys[r], xs[c + 1] - xs[c], ys[r + 1] - ys[r]))
            for r in range(rows) for c in range(cols)]
