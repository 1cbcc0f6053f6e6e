import cv2
import numpy as np
import pytest

from edgefpga.models.card import InputSpec
from edgefpga.models.preprocess import ImageError, normalize, preprocess, resize_u8

GRAY = InputSpec(channels=1, height=96, width=96, color="gray", resize="area", scale=1 / 255, mean=0.5, std=0.25)
BGR = InputSpec(channels=3, height=32, width=48, color="bgr", resize="area", scale=1.0, mean=0.0, std=1.0)


def test_matches_card_formula_on_an_elpv_cell(elpv_data):
    image = elpv_data.images[0]
    expected = cv2.resize(image, (96, 96), interpolation=cv2.INTER_AREA).astype(np.float32)
    expected = (expected / 255 - 0.5) / 0.25
    got = preprocess(image, GRAY)
    assert got.shape == (1, 1, 96, 96) and got.dtype == np.float32
    np.testing.assert_allclose(got[0, 0], expected, atol=1e-6)


def test_resize_u8_keeps_8bit_pixels_and_layout():
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    out = resize_u8(image, BGR)
    assert out.shape == (3, 32, 48) and out.dtype == np.uint8
    np.testing.assert_array_equal(out.transpose(1, 2, 0), cv2.resize(image, (48, 32), interpolation=cv2.INTER_AREA))


def test_color_conversions():
    bgr = np.zeros((10, 10, 3), np.uint8)
    bgr[..., 2] = 200
    assert resize_u8(bgr, GRAY).shape == (1, 96, 96)
    gray = np.full((10, 10, 1), 7, np.uint8)
    out = resize_u8(gray, BGR)
    assert out.shape == (3, 32, 48) and (out == 7).all()


def test_normalize_is_affine():
    pixels = np.array([0, 128, 255], np.uint8)
    np.testing.assert_allclose(normalize(pixels, GRAY), (pixels / 255 - 0.5) / 0.25, atol=1e-6)


@pytest.mark.parametrize("image, reason", [
    (np.zeros((8, 8), np.float32), "uint8"),
    (np.zeros((8, 8, 4), np.uint8), "shape"),
    (np.zeros((0, 8), np.uint8), "empty"),
    ([[1, 2], [3, 4]], "numpy"),
])
def test_bad_images_are_refused_with_reason(image, reason):
    with pytest.raises(ImageError, match=reason):
        preprocess(image, GRAY, name="cell.png")
