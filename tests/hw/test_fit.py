"""Fit or refuse, as a user meets it: a network no design of which fits the board is refused
before any calibration, in one line naming the resource (exit 2, no build folder); a slower
frame rate and a plan file shape the design `convert` builds."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import convert_tiny

from edgefpga.hw.plan import PlanError

pytestmark = pytest.mark.timeout(240)


def test_resnet18_at_224_is_refused_for_a_pynq_z2_naming_block_ram(tmp_path):
    """A 224x224 ResNet-18 (11.7 M parameters) exported by torch.onnx.export: 93 Mbit of weights at
    8 bits for 4.9 Mbit of block RAM. Refused in one line before the calibration images are read."""
    import torch

    from edgefpga.models.export import export_onnx
    from edgefpga.models.reference import ResNet18

    torch.manual_seed(0)
    onnx_path = export_onnx(ResNet18().eval(), (3, 224, 224), tmp_path / "resnet18.onnx")
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "edgefpga.cli", "convert", str(onnx_path), "--board", "pynq-z2",
                          "--out", str(tmp_path / "build"), "--quiet"], capture_output=True, text=True, timeout=200)
    seconds = time.perf_counter() - start
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert "does not fit pynq-z2 at any frame rate: BRAM36 needs" in lines[0] and "of 112 (80% of 140)" in lines[0]
    assert "resnet18.onnx" in lines[0]
    assert not (tmp_path / "build").exists()
    assert seconds < 60, seconds  # the bar of issue 28: refused in under a minute (no calibration, no search)


def test_a_frame_rate_and_a_plan_file_shape_the_design(elpv_data, tmp_path):
    fast = convert_tiny(elpv_data, tmp_path / "fast", "tiny_clip")
    fast_plan = json.loads((tmp_path / "fast" / "build" / "plan.json").read_text())
    slow_fps = fast["estimate"]["fps_at_clock"] / 4
    slow = convert_tiny(elpv_data, tmp_path / "slow", "tiny_clip", fps=slow_fps)
    assert slow_fps <= slow["estimate"]["fps_at_clock"] < fast["estimate"]["fps_at_clock"]
    assert slow["estimate"]["multipliers"] < fast["estimate"]["multipliers"]
    assert slow["rtl"]["predicted_fit"]["used"]["DSP"] <= fast["rtl"]["predicted_fit"]["used"]["DSP"]
    # the slow build's plan file pins the lanes of a third build: the same design
    pinned = convert_tiny(elpv_data, tmp_path / "pinned", "tiny_clip", plan=tmp_path / "slow" / "build" / "plan.json")
    assert pinned["estimate"]["multipliers"] == slow["estimate"]["multipliers"]
    assert pinned["estimate"]["ii_cycles"] == slow["estimate"]["ii_cycles"]
    assert fast_plan["fit"]["fits"] and fast_plan["board"] == "pynq-z2"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"NoSuchLayer": {"ci": 1, "po": 1, "kp": 1}}))
    with pytest.raises(PlanError, match="no layer named NoSuchLayer"):
        convert_tiny(elpv_data, tmp_path / "bad", "tiny_clip", plan=bad)
    assert not (tmp_path / "bad" / "build").exists()
