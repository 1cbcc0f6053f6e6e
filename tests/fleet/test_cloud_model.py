"""The cloud model goes through the edge model's pipeline (fleet/cloud_model.py, models/zoo_build.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # a real (tiny) training run on ELPV


@pytest.mark.timeout(600)
def test_cloud_train_writes_a_servable_model_folder(tmp_path, capsys):
    from edgefpga.cli import main
    from edgefpga.fleet.cloud import CloudModel

    out = tmp_path / "cloud"
    assert main(["cloud", "train", "--out", str(out), "--epochs", "1", "--limit", "64", "--size", "32",
                 "--threads", "1"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["metrics"]["test"]["n"] == 654 and card["input"]["shape"] == [1, 1, 32, 32]
    assert card["architecture"]["kind"] == "cloud_resnet" and card["onnx"]["batch"] == "symbolic"
    assert "fixed_point_check" in card["metrics"] and card["metrics"]["fixed_point_check"] == []  # no FPGA step
    model = CloudModel(out, threads=1)
    rng = np.random.default_rng(0)
    probs = model.probabilities([rng.integers(0, 256, (300, 300), dtype=np.uint8) for _ in range(5)])
    assert probs.shape == (5, 2) and np.allclose(probs.sum(1), 1)  # one batched call
