"""OpenCV preprocessing driven by the model card: the one definition every backend shares.

The accelerator takes the resized 8-bit pixels and folds ``(pixel*scale - mean)/std`` into its
first layer, so preprocessing is split in two: ``resize_u8`` (what the FPGA receives) and
``normalize`` (what the float model adds). Training, evaluation, the emulator and the runtime
all go through these functions so that their inputs agree bit for bit. Image files are read by
``imagefiles.py`` (its checks, and batches that go on past a bad file).
"""

from __future__ import annotations

import cv2
import numpy as np

from .card import InputSpec


class ImageError(ValueError):
    """An image that cannot be fed to a model: the message says which and why."""


def to_8bit(image: np.ndarray, bits: int = 16, name: str = "image") -> np.ndarray:
    """16-bit pixels (mono16 messages, 16-bit PNG/TIFF) as the 8-bit pixels a model takes: the top
    8 of the ``bits`` significant bits, ``value >> (bits - 8)``, saturating at 255. A 12-bit EL
    camera in a 16-bit container is ``bits=12``; the default 16 reads a full-range image. A fixed
    shift, not a per-image stretch: the same scene gives the same pixels in every frame."""
    if image.dtype == np.uint8:
        return image
    if image.dtype != np.uint16:
        raise ImageError(f"{name}: expected 8- or 16-bit pixels, got {image.dtype}")
    if not 8 <= bits <= 16:
        raise ImageError(f"{name}: significant bits must be within 8..16, got {bits}")
    return np.minimum(image >> (bits - 8), 255).astype(np.uint8)


def as_gray_or_bgr(image: np.ndarray) -> np.ndarray:
    """Drop an alpha channel (BGRA -> BGR) and a single channel axis (H, W, 1 -> H, W)."""
    if image.ndim == 3 and image.shape[2] == 4:
        return image[:, :, :3]
    return image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image


def to_model_color(image: np.ndarray, spec: InputSpec, name: str = "image") -> np.ndarray:
    """Convert an 8-bit gray (H, W) / (H, W, 1) or BGR (H, W, 3) image (OpenCV's order, what
    cameras and ROS bgr8 give) to the card's color: gray, BGR or RGB."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageError(f"{name}: expected 8-bit pixels (uint8), got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ImageError(f"{name}: expected a gray (H, W) or BGR (H, W, 3) image, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"{name}: empty image of shape {image.shape}")
    if spec.color == "gray":
        return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)  # the same three planes in either order
    return image if spec.color == "bgr" else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def resize_u8(image: np.ndarray, spec: InputSpec, name: str = "image") -> np.ndarray:
    """8-bit pixels exactly as the accelerator receives them: (C, H, W) uint8."""
    image = to_model_color(image, spec, name)
    if image.shape[:2] != (spec.height, spec.width):
        image = cv2.resize(image, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
    if image.ndim == 2:
        image = image[:, :, None]
    return np.ascontiguousarray(image.transpose(2, 0, 1))


def normalize(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``(pixel*scale - mean)/std`` as float32. A scalar mean and std apply to any array of 8-bit
    pixels; per-channel ones to (C, H, W) or (N, C, H, W) pixels, channel by channel."""
    mean, std = (np.asarray(v, dtype=np.float32) for v in (spec.mean, spec.std))
    if mean.ndim or std.ndim:
        mean = np.asarray(spec.channel_mean, dtype=np.float32)[:, None, None]
        std = np.asarray(spec.channel_std, dtype=np.float32)[:, None, None]
    return ((pixels.astype(np.float32) * np.float32(spec.scale) - mean) / std).astype(np.float32)


def preprocess(image: np.ndarray, spec: InputSpec, name: str = "image") -> np.ndarray:
    """One image to the float network input (1, C, H, W)."""
    return normalize(resize_u8(image, spec, name), spec)[None]


def resize_batch(images, spec: InputSpec) -> np.ndarray:
    """A stack (N, H, W[, C]) or a list of images of any sizes to (N, C, H, W) uint8 pixels."""
    return np.stack([resize_u8(img, spec, f"image {i}") for i, img in enumerate(images)])
