"""Regression: a small CNN whose conversion succeeded and whose hls4ml emulator equalled the
integer model, but whose RTL mismatched it on every frame. Two causes, both in the last layer:

- the dense layer's result type had more fractional bits than its exact accumulator (small
  scores, narrow weights): the integer model casts with a left shift, but ef_requant.vh shifted
  right by a negative SHIFT (Verilog reads it as a huge unsigned shift). Now a negative SHIFT is
  an exact left shift, saturated first.
- the calibration scores were all positive, so the search gave the output an unsigned type: the
  accelerator sends two's-complement words, so a score with its top bit set came out negative.
  The network's output type is now always signed.

The tiny torch-exported net below hits both (its classifier bias makes every score positive; the
override file narrows the dense weights and bias and widens the output) through convert and
`verify` on a few frames; before the fix, 0 of them were bit-exact."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from edgefpga.hw.convert import ConvertConfig, convert
from edgefpga.models.card import InputSpec
from edgefpga.models.preprocess import normalize, resize_batch
from edgefpga.models.reference import calibrate
from edgefpga.sim.verify import verify

pytestmark = pytest.mark.slow
NORM = dict(scale=1 / 255, mean=0.5, std=0.25)


class PositiveScores(nn.Module):
    """Gray 16x16: conv 3x3 + ReLU, a global average pool over all 256 pixels, dense 4 -> 2."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, 1, 1)
        self.pool = nn.AvgPool2d(16)
        self.classifier = nn.Linear(4, 2)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def test_dense_left_shift_and_signed_output(tmp_path, elpv_data):
    from edgefpga.models import elpv

    parts = elpv.split(elpv_data)
    rng = np.random.default_rng(0)
    calib, test = rng.choice(parts.train, 200, replace=False), rng.choice(parts.test, 8, replace=False)
    np.savez(tmp_path / "calib.npz", images=elpv_data.images[calib])
    np.savez(tmp_path / "test.npz", images=elpv_data.images[test])
    spec = InputSpec(1, 16, 16, "gray", "area", **NORM)
    torch.manual_seed(0)
    model = PositiveScores()
    images = torch.from_numpy(normalize(resize_batch(elpv_data.images[calib], spec), spec))
    with torch.no_grad():
        calibrate(model, images)
        scores = model(images)
        model.classifier.bias.add_(float(-scores.min()) + 0.25)  # every score positive
        assert float(model(images).min()) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 1, 16, 16), str(tmp_path / "net.onnx"), opset_version=13,
                          dynamo=False, input_names=["image"], output_names=["scores"])
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({"MatMul_0.weight": 4, "MatMul_0.bias": 4, "Add_0.result": 16}))
    build = tmp_path / "build"
    convert(str(tmp_path / "net.onnx"), build, ConvertConfig(calibration=str(tmp_path / "calib.npz"),
            calibration_images=200, emulator_images=16, overrides=overrides, agreement=0.5, progress=False, **NORM),
            log=lambda _m: None)
    result = verify(build, images=str(tmp_path / "test.npz"), sample=8, progress=False, agreement=0.0)
    assert result["rtl"]["bit_exact_frames"] == result["rtl"]["n"] == 8
    assert not result["failed"]
    manifest = json.loads((build / "rtl" / "manifest.json").read_text())
    dense = next(s for s in manifest["stages"] if s["module"] == "ef_dense")
    assert dense["params"]["SHIFT"] < 0  # the case: result type finer than the accumulator
    assert manifest["output"]["signed"]
