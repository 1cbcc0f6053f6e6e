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
    head = json.loads((ZOO / "dense_head_ref" / "card.json").read_text())  # 16x8x8 -> 128 -> 64 -> 2
    assert (head["params"], head["macs"]) == (140_978, 655_488) and head["input"]["shape"] == [1, 3, 32, 32]


def test_reference_shapes_are_trained_on_elpv_by_the_recorded_recipe():
    """The shapes carry ELPV-trained weights (random ones left near-tie logits: MobileNet's searched
    widths, and its PYNQ-Z2 fit, swung between machines; ResNet-8 needed 9-12-bit operands to
    keep its agreement bar): each card names the recipe it was built with and the one score on the
    654 test cells, above the majority class's 0.688 where the net is more than a head."""
    from dataclasses import asdict

    from edgefpga.models import elpv
    from edgefpga.models.card import load_card
    from edgefpga.models.reference import REFERENCES, TRAINING

    for name in ("resnet8_ref", "mobilenet_v1_025_ref", "dense_head_ref"):
        trained = load_card(ZOO / name)
        assert REFERENCES[name].trained and trained.classes == elpv.CLASSES
        assert trained.raw["dataset"]["name"] == "ELPV" and trained.raw["dataset"]["training"] == asdict(TRAINING)
        assert trained.raw["metrics"]["test"]["n"] == 654
    for name in ("resnet8_ref", "mobilenet_v1_025_ref"):
        test = load_card(ZOO / name).raw["metrics"]["test"]
        assert test["accuracy"] > 0.75 and test["balanced_accuracy"] > 0.6
