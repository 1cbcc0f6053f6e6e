"""`edgefpga convert --calibration FOLDER` and `edgefpga verify --images FOLDER` on a folder with
bad files beside good cells (issue 31, item 4): each bad file named with its reason and recorded in
report.json / verify.json, the build made from the rest, exit status 3; `--strict` stops at the
first (exit 2) as before. The tiny Clip network: a whole build in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bad_files import BAD, write_mixed_folder
from conftest import TINY_SPEC
from torch_nets import export_feature_net

from edgefpga.cli import main
from edgefpga.models.card import InputSpec
from edgefpga.models.imagefiles import EXIT_SKIPPED
from edgefpga.models.preprocess import normalize, resize_batch

GOOD = 40  # cells beside the bad files: enough for the tiny net's precision search


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, elpv_data) -> tuple[Path, Path, list[str]]:
    """The tiny Clip net's ONNX and a calibration folder of GOOD cells plus every bad file."""
    folder = tmp_path_factory.mktemp("batch")
    cells = elpv_data.images[np.random.default_rng(0).choice(len(elpv_data.images), GOOD, replace=False)]
    usable = write_mixed_folder(folder / "cells", list(cells))
    spec = InputSpec(**TINY_SPEC)
    onnx_path = export_feature_net("tiny_clip", normalize(resize_batch(cells, spec), spec), folder / "tiny.onnx")
    return onnx_path, folder / "cells", usable


def convert_args(onnx_path: Path, cells: Path, out: Path) -> list[str]:
    spec = InputSpec(**TINY_SPEC)
    return ["convert", str(onnx_path), "--calibration", str(cells), "--out", str(out), "--quiet",
            "--scale", str(spec.scale), "--mean", str(spec.mean), "--std", str(spec.std)]


def assert_named_and_counted(err: str, cells: Path, command: str) -> None:
    for name, reason in BAD.items():
        assert f"edgefpga {command}: skipped {cells / name}: {reason}:" in err, err
    assert f"skipped {len(BAD)} of" in err.strip().splitlines()[-1], err


def assert_recorded(record: dict) -> None:
    assert sorted(Path(f["file"]).name for f in record["files"]) == sorted(BAD)
    assert record["counts"] == {reason: 1 for reason in BAD.values()}


@pytest.mark.timeout(600)
def test_convert_and_verify_go_on_past_bad_files(tiny, tmp_path, capsys):
    onnx_path, cells, usable = tiny
    build = tmp_path / "build"
    assert main(convert_args(onnx_path, cells, build)) == EXIT_SKIPPED
    assert_named_and_counted(capsys.readouterr().err, cells, "convert")
    report = json.loads((build / "report.json").read_text())
    assert_recorded(report["calibration_skipped"])
    assert report["precision_search"]["calibration"]["n"] == len(usable)
    assert main(["verify", str(build), "--images", str(cells), "--sample", "2", "--quiet"]) == EXIT_SKIPPED
    assert_named_and_counted(capsys.readouterr().err, cells, "verify")
    verified = json.loads((build / "verify.json").read_text())
    assert_recorded(verified["images_skipped"])
    assert verified["emulator"]["n"] == len(usable) and not verified["failed"]


@pytest.mark.timeout(300)
def test_strict_stops_at_the_first_bad_file(tiny, tmp_path, capsys):
    onnx_path, cells, _ = tiny
    build = tmp_path / "build"
    assert main(convert_args(onnx_path, cells, build) + ["--strict"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"edgefpga convert: error: {cells / 'empty.png'}: empty file: 0 bytes"
    assert not build.exists()  # nothing half-written
