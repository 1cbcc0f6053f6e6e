"""On a board, a build folder without a loadable bitstream: `auto` says so and falls back to the
next backend, naming why. The board is stood in for by a `pynq` module that finds one device
(this machine has no PYNQ); what is tested is the runtime's choice, not PYNQ."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from bitfiles import bit_file

FAKE_BOARD = "class Device:\n    devices = ['a PYNQ-Z2']\n"


@pytest.fixture
def on_a_board(tmp_path) -> dict:
    site = tmp_path / "board_site"
    (site / "pynq").mkdir(parents=True)
    (site / "pynq" / "__init__.py").write_text(FAKE_BOARD)
    return dict(os.environ, PYTHONPATH=str(site))


@pytest.fixture
def board_copy(elpv_build, tmp_path) -> Path:
    """What docs/board.md says to copy to the board: report, model, overlay.json (no bitstream yet)."""
    copy = tmp_path / "on_board"
    (copy / "overlay").mkdir(parents=True)
    shutil.copyfile(elpv_build / "report.json", copy / "report.json")
    shutil.copytree(elpv_build / "model", copy / "model")
    shutil.copyfile(elpv_build / "overlay" / "overlay.json", copy / "overlay" / "overlay.json")
    return copy


def infer(build: Path, image: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "edgefpga"), "infer", str(image), "--model", str(build),
                           "--json", "--quiet"], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("damage, reason", [
    (None, "bitstream/elpv_defect.bit: no bitstream"),
    ("truncated", "truncated: 4,000 of 4,096 bytes"),
    ("other part", "built for xczu7ev-ffvc1156-2-e, this build is for xc7z020clg400-1"),
])
def test_auto_names_the_bitstream_problem_and_falls_back(board_copy, on_a_board, elpv_data, tmp_path, damage, reason):
    image = tmp_path / "cell.png"
    cv2.imwrite(str(image), elpv_data.images[0])
    if damage:
        (board_copy / "bitstream").mkdir()
        bit = bit_file(board_copy / "bitstream" / "elpv_defect.bit",
                       "7z020clg400" if damage == "truncated" else "xczu7ev-ffvc1156-2-e")
        if damage == "truncated":
            bit.write_bytes(bit.read_bytes()[:-96])
        (board_copy / "bitstream" / "elpv_defect.hwh").write_text("<hwh/>")
    run = infer(board_copy, image, on_a_board)
    assert run.returncode == 0, run.stderr
    assert reason in run.stderr and "pynq backend:" in run.stderr, run.stderr
    assert json.loads(run.stdout)[0]["backend"] == "onnx"  # no rtl or emulator in a board copy: the float model
