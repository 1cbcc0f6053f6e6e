"""sensor_msgs/Image and CompressedImage to numpy: layouts that must work, messages that must not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from edgefpga.ros_nodes.images import BadImage, array_to_image, compressed_to_array, grid_cells, image_to_array


def test_mono8_with_row_padding_reads_the_pixels_only():
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    padded = np.hstack([pixels, np.full((3, 2), 255, np.uint8)])
    msg = Image(height=3, width=4, encoding="mono8", step=6, data=padded.tobytes())
    assert np.array_equal(image_to_array(msg), pixels)


@pytest.mark.parametrize("encoding", ["bgr8", "rgb8"])
def test_color_round_trip_comes_back_as_bgr(encoding):
    bgr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    msg = array_to_image(bgr, Image(), encoding)
    assert msg.encoding == encoding and msg.step == 21
    assert np.array_equal(image_to_array(msg), bgr)


@pytest.mark.parametrize("msg, kind, text", [
    (Image(height=2, width=2, encoding="16UC1", step=4, data=bytes(8)), "encoding", "16UC1"),
    (Image(height=4, width=4, encoding="mono8", step=4, data=bytes(10)), "layout", "fewer than height x step"),
    (Image(height=4, width=4, encoding="bgr8", step=4, data=bytes(64)), "layout", "step 4 is shorter"),
    (Image(height=0, width=5, encoding="mono8", step=5, data=b""), "size", "zero-size"),
    (Image(height=50_000, width=50_000, encoding="mono8", step=50_000, data=b""), "size", "larger than"),
])
def test_bad_images_name_the_problem(msg, kind, text):
    with pytest.raises(BadImage, match=text) as info:
        image_to_array(msg)
    assert info.value.kind == kind


def test_compressed_png_decodes_and_garbage_does_not():
    gray = np.random.default_rng(1).integers(0, 256, (9, 11), dtype=np.uint8)
    ok, png = cv2.imencode(".png", gray)
    assert np.array_equal(compressed_to_array(CompressedImage(format="png", data=png.tobytes())), gray)
    with pytest.raises(BadImage, match="does not decode") as info:
        compressed_to_array(CompressedImage(format="jpeg", data=b"\xff\xd8garbage"))
    assert info.value.kind == "compressed"
    with pytest.raises(BadImage, match="empty"):
        compressed_to_array(CompressedImage(format="png", data=b""))


def test_grid_cells_cover_every_pixel_once():
    image = np.arange(7 * 10, dtype=np.int64).reshape(7, 10)
    cells = grid_cells(image, 2, 3)
    assert len(cells) == 6 and cells[0][1] == (0, 0, 3, 3) and cells[-1][1] == (6, 3, 4, 4)
    assert sorted(np.concatenate([c.ravel() for c, _ in cells]).tolist()) == image.ravel().tolist()


@pytest.mark.parametrize("bigendian", [0, 1])
def test_mono16_keeps_the_top_8_of_the_significant_bits(bigendian):
    """A 12-bit EL camera in a 16-bit container: mono16_bits=12 maps 0..4095 onto 0..255."""
    twelve = np.random.default_rng(2).integers(0, 4096, (6, 5), dtype=np.uint16)
    data = twelve.astype(">u2" if bigendian else "<u2").tobytes()
    msg = Image(height=6, width=5, encoding="mono16", step=10, is_bigendian=bigendian, data=data)
    assert np.array_equal(image_to_array(msg, mono16_bits=12), (twelve >> 4).astype(np.uint8))
    full = image_to_array(msg)  # default 16 significant bits: a 12-bit image comes out dark
    assert full.dtype == np.uint8 and full.max() <= 15
    with pytest.raises(BadImage, match="fewer than height x step"):
        image_to_array(Image(height=6, width=5, encoding="mono16", step=10, data=data[:-1]))


def test_mono16_saturates_values_beyond_the_declared_bits():
    msg = array_to_image(np.array([[4095, 8000, 65535]], dtype=np.uint16), Image())
    assert msg.encoding == "mono16" and msg.step == 6
    assert image_to_array(msg, mono16_bits=12).tolist() == [[255, 255, 255]]


def test_16bit_png_decodes_like_a_mono16_message():
    sixteen = np.random.default_rng(3).integers(0, 65536, (7, 9), dtype=np.uint16)
    ok, png = cv2.imencode(".png", sixteen)
    assert ok
    decoded = compressed_to_array(CompressedImage(format="png", data=png.tobytes()))
    assert np.array_equal(decoded, image_to_array(array_to_image(sixteen, Image())))
    assert np.array_equal(decoded, (sixteen >> 8).astype(np.uint8))
