"""`edgefpga infer FOLDER` on a folder as a plant's disk holds it (issue 31, item 4): every good
image answered, every bad file named with its reason, a count per reason, exit status 3;
`--strict` stops at the first as before (exit 2). And the reading rule itself, file by file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bad_files import BAD, CONVERTED, write_mixed_folder

from edgefpga.models.imagefiles import EXIT_SKIPPED, Skips, UnusableImage, header_size, read_each, read_image

EDGEFPGA = str(Path(sys.executable).parent / "edgefpga")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, elpv_data) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("plant") / "cells"
    return folder, write_mixed_folder(folder, list(elpv_data.images[:4]))


def infer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EDGEFPGA, "infer", *args, "--backend", "onnx", "--quiet"], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(BAD))
def test_each_bad_file_is_refused_with_its_reason(mixed, name):
    folder, _ = mixed
    with pytest.raises(UnusableImage) as caught:
        read_image(folder / name)
    assert caught.value.reason == BAD[name] and str(folder / name) in str(caught.value)


@pytest.mark.timeout(60)
def test_sixteen_bit_and_rgba_are_converted_to_the_same_pixels(mixed, elpv_data):
    folder, _ = mixed
    assert np.array_equal(read_image(folder / "sixteen_bit.png"), elpv_data.images[1])  # top 8 bits
    assert np.array_equal(read_image(folder / "rgba.png"), np.dstack([elpv_data.images[2]] * 3))  # alpha dropped


@pytest.mark.timeout(60)
def test_read_each_goes_on_and_counts_per_reason(mixed):
    folder, usable = mixed
    files = sorted(folder.iterdir())
    skips = Skips()
    kept = [files[i].name for i, _ in read_each(files, skips)]
    assert kept == usable
    assert sorted(s.path for s in skips.skipped) == sorted(str(folder / n) for n in BAD)
    assert skips.counts() == {reason: 1 for reason in BAD.values()} and skips.seen == len(files)
    assert skips.exit_status() == EXIT_SKIPPED and skips.exit_status(1) == 1  # a failed check outranks it
    with pytest.raises(UnusableImage, match="empty.png: empty file"):
        list(read_each(files, Skips(strict=True)))


@pytest.mark.timeout(120)
def test_a_huge_image_is_refused_before_it_is_decoded(mixed):
    """12,000 x 12,000 gray decodes to 144 MB: the refusal comes from the header, so the process
    grows by far less than that (a decode first would show here)."""
    folder, _ = mixed
    probe = ("import resource, sys; from pathlib import Path; from edgefpga.models.imagefiles import read_pixels, "
             "UnusableImage\nbefore = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             "try:\n    read_pixels(Path(sys.argv[1]))\nexcept UnusableImage as exc:\n    print(exc.reason)\n"
             "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)")
    out = subprocess.run([sys.executable, "-c", probe, str(folder / "huge_12000x12000.png")], capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    assert out[:2] == ["too", "large"] and int(out[2]) < 40, out  # MB grown


@pytest.mark.timeout(300)
def test_infer_answers_every_good_image_and_names_every_bad_one(mixed):
    folder, usable = mixed
    result = infer(str(folder), "--json")
    assert result.returncode == EXIT_SKIPPED, result.stderr
    answered = json.loads(result.stdout)
    assert [Path(r["source"]).name for r in answered] == usable
    for name, reason in BAD.items():
        assert f"skipped {folder / name}: {reason}:" in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]  # the count per reason comes at the end
    assert f"skipped {len(BAD)} of {len(BAD) + len(usable)} files" in last
    assert all(f"{reason} 1" in last for reason in BAD.values()), last
    by_name = {Path(r["source"]).name: r["probabilities"] for r in answered}
    assert by_name["sixteen_bit.png"] == by_name["good_1.png"] and by_name["rgba.png"] == by_name["good_2.png"]
    assert set(CONVERTED) <= set(by_name)


@pytest.mark.timeout(300)
def test_infer_strict_stops_at_the_first_bad_file(mixed):
    folder, _ = mixed
    result = infer(str(folder), "--strict")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (f"edgefpga infer: error: {folder / 'empty.png'}: empty file: "
                                                      "0 bytes")
    assert result.stdout == ""


@pytest.mark.timeout(300)
def test_infer_with_only_bad_files_exits_2_naming_them(tmp_path, elpv_data):
    folder = tmp_path / "bad"
    write_mixed_folder(folder, list(elpv_data.images[:3]))
    for good in [*folder.glob("good_*.png"), *(folder / n for n in CONVERTED)]:
        good.unlink()
    result = infer(str(folder))
    assert result.returncode == 2
    assert all(str(folder / name) in result.stderr for name in BAD)
    assert f"none of the {len(BAD)} images is usable" in result.stderr


@pytest.mark.timeout(60)
def test_float_pixels_and_sizes_from_other_headers(tmp_path):
    """A float32 TIFF is refused for its pixels; the size limit is read from JPEG, BMP and TIFF
    headers as from PNG's (a 5000 x 4000 image: 20 Mpx, over the 4096 x 4096 limit)."""
    import cv2

    cv2.imwrite(str(tmp_path / "float.tif"), np.zeros((20, 20), np.float32))
    with pytest.raises(UnusableImage, match="float.tif: unsupported pixels: float32"):
        read_image(tmp_path / "float.tif")
    big = np.zeros((4000, 5000), np.uint8)
    for suffix, fmt in ((".jpg", "JPEG"), (".bmp", "BMP"), (".tif", "TIFF")):
        cv2.imwrite(str(tmp_path / f"big{suffix}"), big)
        assert header_size(tmp_path / f"big{suffix}") == (fmt, (5000, 4000))  # before any decoding
        with pytest.raises(UnusableImage, match=f"big{suffix}: too large: 5000x4000"):
            read_image(tmp_path / f"big{suffix}")
