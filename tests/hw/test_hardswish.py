"""MobileNetV3's activations (issue 30, item 4): HardSwish as a mode of ef_act (x times its gate
clip(x + 3, 0, 6), exactly, times 1/6 rounded to 16 bits, one rounding cast) and HardSigmoid as
an affine map and a Clip to [0, 1] (folded into the Conv before it and its saturation).

``torch.onnx.export`` writes nn.Hardswish three ways: at opset 13 the TorchScript exporter writes
``x * HardSigmoid(x)`` (alpha 1/6), at opset 17 ``HardSwish``, and the default torch.export-based
exporter (opset 20) ``HardSwish`` too. One small net, trained briefly on 16x16 false-color ELPV cells
(random nets leave near-tie logits), gives one canonical graph from all three and an RTL bit-exact
to the integer model. HardSwish has no hls4ml emulator (the integer model stands in), so each
conversion takes seconds; the three builds have the same RTL, so Verilator builds it once."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from test_habits import cells  # noqa: F401  (the module's fixture)
from three_ways import (REFERENCE, assert_one_design, assert_one_graph, canonical, convert_every_way, export,
                        export_every_way, float_scores, train_on)
from torch import nn

from edgefpga.hw.onnx_check import ConversionError, check_onnx

pytestmark = [pytest.mark.xdist_group("hardswish"), pytest.mark.timeout(300)]  # the trained net is made once


class MobileV3(nn.Module):
    """conv -> HardSwish -> conv -> Hardsigmoid -> max pool -> dense: MobileNetV3's two activations
    without the squeeze-excitation (the gate here scales nothing: the pool takes it)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardswish(),
                                  nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.Hardsigmoid(), nn.MaxPool2d(2))
        self.fc = nn.Linear(8 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.body(x / 255.0), 1))


@pytest.fixture(scope="module")
def trained(cells):  # noqa: F811
    return train_on(MobileV3, cells)


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory):
    return export_every_way(trained, tmp_path_factory.mktemp("hardswish"), "mobilev3.onnx")


def test_exports_give_one_canonical_graph(trained, cells, exports):  # noqa: F811
    """opset 13's ``x * HardSigmoid(x)`` and opset 17's and the default's ``HardSwish`` become one
    HardSwish; each HardSigmoid is folded into the Conv before it and a Clip to [0, 1]; the three
    canonical graphs are one (opset 14) and compute what PyTorch computes."""
    _, _, test, *_ = cells
    with torch.no_grad():
        expected = trained(torch.from_numpy(test.astype(np.float32))).numpy()
    written = {way: [n.op_type for n in onnx.load(str(p)).graph.node] for way, p in exports.items()}
    assert "HardSwish" not in written["opset13"] and "Mul" in written["opset13"]
    assert "HardSwish" in written["opset17"] and "HardSwish" in written["default"]
    graphs = {}
    for way, path in exports.items():
        graphs[way] = graph = canonical(path)
        np.testing.assert_allclose(float_scores(graph, test), expected, atol=1e-4, err_msg=way)
    reference = graphs["opset13"]
    assert [n.op_type for n in reference.graph.node] == ["BatchNormalization", "Conv", "HardSwish", "Conv", "Clip",
                                                         "MaxPool", "Flatten", "MatMul", "Add"]
    assert_one_graph(graphs)
    assert (expected.argmax(1) == 1).mean() not in (0.0, 1.0)  # trained: not one class for every cell


def test_hardswish_is_bit_exact(trained, cells, exports, tmp_path):  # noqa: F811
    """Each export converts to the same precisions, integer model and RTL (file for file), the
    integer model within the agreement bar of the float model; the RTL is bit-exact to it on
    held-out cells."""
    from edgefpga.sim.verify import verify

    for way, report in convert_every_way(exports, cells, tmp_path).items():
        assert report["hls"]["project"] is None, way  # no hls4ml HardSwish: the integer model stands in
    result = verify(tmp_path / f"build_{REFERENCE}", images=str(tmp_path / "test.npz"), sample=4, progress=False,
                    agreement=0.9)
    assert result["rtl"]["bit_exact_frames"] == result["rtl"]["n"] == 4
    assert result["emulator"]["top1_agreement"] >= 0.9  # the integer model against the float one
    assert result["failed"] == []
    assert_one_design(cells, tmp_path)  # the other exports' verify would repeat the one above


class Gated(nn.Module):
    """x * hardsigmoid(x): TorchScript's opset 13 writes it as nn.Hardswish (HardSigmoid, Mul)."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

    def forward(self, x):
        x = self.conv(x)
        x = x * nn.functional.hardsigmoid(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_other_gates_are_refused(tmp_path):
    """``x * HardSigmoid(x)`` with alpha 0.2 (ONNX's default) is no HardSwish: refused in one line
    naming the file, the node, Mul and the gate's alpha."""
    model = onnx.load(str(export(Gated().eval(), tmp_path / "sixth.onnx", nhwc=False, opset_version=13,
                                 dynamo=False)))
    check_onnx(tmp_path / "sixth.onnx")  # nn.Hardswish's gate: accepted
    gate = next(n for n in model.graph.node if n.op_type == "HardSigmoid")
    for a in gate.attribute:
        if a.name == "alpha":
            a.f = 0.2
    path = tmp_path / "fifth.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ConversionError) as refused:
        check_onnx(path)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{path}: node '"), message
    assert "(Mul)" in message and "alpha 0.2" in message, message
