"""MLPerf Tiny's reference shapes in the zoo (models/reference.py, exported by torch.onnx.export):
their cards state the sizes MLPerf Tiny gives. Taking them through the whole road (minutes of g++
and Verilator each) is `make bench`'s: bench/reference_models.py converts both, runs all 654 test
cells through the RTL and the emulator and Yosys, and exits non-zero unless every frame is
bit-exact. Their features are in the suite through tests/hw/test_features.py (post_add_bn: a
ResNet-8-style downsampling block; convs: the depthwise engine)."""

from __future__ import annotations

import json

from edgefpga.models.card import ZOO


def test_reference_cards_have_mlperf_sizes():
    resnet = json.loads((ZOO / "resnet8_ref" / "card.json").read_text())
    assert 75_000 <= resnet["params"] <= 80_000 and 12_000_000 <= resnet["macs"] <= 13_000_000
    mobilenet = json.loads((ZOO / "mobilenet_v1_025_ref" / "card.json").read_text())
    assert 200_000 <= mobilenet["params"] <= 230_000 and mobilenet["input"]["shape"] == [1, 3, 96, 96]
