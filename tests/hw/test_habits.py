"""The graph habits of common exporters, folded (issue 30, item 4): a Keras / tf2onnx-style NHWC
input transposed to NCHW (into the stream order), torchvision's ``(x - mean) / std`` and Keras'
``Rescaling`` inside ``forward`` (into the input normalization: one ef_affine stage), and
``nn.ZeroPad2d`` before a Conv, a MaxPool and an AveragePool (into their own padding).

One small net has every habit and is trained a few hundred steps on 16x16 false-color ELPV
cells (random nets leave near-tie logits). ``torch.onnx.export`` writes it three ways: the
TorchScript exporter at opset 13 and 17 (each ZeroPad2d a Pad whose pads come from a
ConstantOfShape / Concat / Slice / Transpose chain on constants) and the default torch.export-based
one (opset 20: the zero pads before convolutions already in the Conv, Pad with constant pads before
the pools). All three give one canonical graph, convert to one integer model and a bit-exact RTL.
Where a fold would change what the model computes, the habit is refused by name.

The padded pools have no hls4ml emulator (its pooling asserts on padding), so conversion takes
seconds; the three builds have the same RTL, so Verilator builds it once (edgefpga/cache.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from brief_training import train_briefly
from conftest import false_color
from three_ways import (REFERENCE, SPEC, WAYS, assert_one_design, assert_one_graph, convert_every_way, export,
                        export_every_way, float_scores)
from torch import nn

from edgefpga.hw.graph import canonical_graph, onnx_session
from edgefpga.hw.onnx_check import ConversionError, check_onnx
from edgefpga.models.preprocess import resize_batch

pytestmark = [pytest.mark.xdist_group("habits"), pytest.mark.timeout(300)]  # the trained net is made once


class Habits(nn.Module):
    """NHWC pixels in (permuted), Keras' Rescaling to [-1, 1] (Mul, Add), torchvision's Normalize
    (Sub, Div) with one mean and std per channel, then zero pads: symmetric before a valid conv, before a max pool
    (after a ReLU: exact), asymmetric before a 2x2 conv, and before an average pool."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([-0.4, 0.0, -0.2]).view(3, 1, 1))
        self.register_buffer("std", torch.tensor([0.5, 0.6, 0.4]).view(3, 1, 1))
        self.conv1 = nn.Sequential(nn.ZeroPad2d(1), nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
        self.pool1 = nn.Sequential(nn.ZeroPad2d(1), nn.MaxPool2d(3, 2))
        self.conv2 = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(8, 8, 2), nn.ReLU())
        self.pool2 = nn.Sequential(nn.ZeroPad2d(1), nn.AvgPool2d(3, 2))
        self.fc = nn.Linear(8 * 4 * 4, 2)

    def forward(self, x):
        x = x.permute(0, 3, 1, 2) * (1 / 127.5) + (-1.0)
        x = (x - self.mean) / self.std
        x = self.pool2(self.conv2(self.pool1(self.conv1(x))))
        return self.fc(torch.flatten(x, 1))


@pytest.fixture(scope="module")
def cells(elpv_data):
    """16x16 BGR pixels (N, C, H, W) and labels of 1024 training cells, of 64 test cells, and 64
    training and 16 test cells as images (300x300x3) for convert and verify."""
    from edgefpga.models import elpv

    parts = elpv.split(elpv_data)
    rng = np.random.default_rng(0)
    train, test = rng.choice(parts.train, 1024, replace=False), rng.choice(parts.test, 64, replace=False)
    train_img, test_img = false_color(elpv_data.images[train]), false_color(elpv_data.images[test])
    return (resize_batch(train_img, SPEC), elpv.binary_labels(elpv_data.proba[train]), resize_batch(test_img, SPEC),
            train_img[:64], test_img[:16])


@pytest.fixture(scope="module")
def trained(cells):
    """The habits net trained 300 steps (batch 32, Adam) on raw NHWC pixels, in eval mode."""
    pixels, labels, *_ = cells
    x = torch.from_numpy(pixels.transpose(0, 2, 3, 1).astype(np.float32))
    y = torch.from_numpy(labels).long()
    return train_briefly(Habits, x, y)


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory) -> dict[str, Path]:
    """way -> the trained net exported that way (each in its own folder, all named habits.onnx:
    the same model name, so the same RTL)."""
    return export_every_way(trained, tmp_path_factory.mktemp("habits"), "habits.onnx", nhwc=True)


def canonical(path: Path):
    model, shape = check_onnx(path)
    assert shape == [1, SPEC.channels, SPEC.height, SPEC.width]  # NCHW, read from the NHWC input
    return canonical_graph(model, str(path))


def test_habits_fold_away(trained, cells, exports):
    """Each export holds the habits (Transpose, Mul, Add, Sub, Div, Pad); each canonical graph holds
    none: one affine stage in front, the pads in the Conv and pool attributes, the same graph for
    all three exports, computing what PyTorch computes on real cells."""
    _, _, test, *_ = cells
    with torch.no_grad():
        expected = trained(torch.from_numpy(test.transpose(0, 2, 3, 1).astype(np.float32))).numpy()
    graphs = {}
    for way, path in exports.items():
        ops = [n.op_type for n in onnx.load(str(path)).graph.node]
        assert {"Transpose", "Mul", "Add", "Sub", "Div", "Pad"} <= set(ops), way
        graphs[way] = graph = canonical(path)
        np.testing.assert_allclose(float_scores(graph, test), expected, atol=1e-4, err_msg=way)
    reference = graphs["opset13"]
    assert [n.op_type for n in reference.graph.node] == ["BatchNormalization", "Conv", "Relu", "MaxPool", "Conv",
                                                         "Relu", "AveragePool", "Flatten", "MatMul", "Add"]
    pads = {n.op_type + str(i): list(next(a.ints for a in n.attribute if a.name == "pads"))
            for i, n in enumerate(reference.graph.node) if n.op_type in ("Conv", "MaxPool", "AveragePool")}
    assert pads == {"Conv1": [1, 1, 1, 1], "MaxPool3": [1, 1, 1, 1], "Conv4": [0, 0, 1, 1],
                    "AveragePool6": [1, 1, 1, 1]}
    assert_one_graph(graphs)
    assert (expected.argmax(1) == 1).mean() not in (0.0, 1.0)  # trained: not one class for every cell


@pytest.mark.slow
def test_habits_are_bit_exact(trained, cells, exports, tmp_path):
    """The three exports convert to the same precisions, integer model and RTL (file for file); the
    RTL is bit-exact to the integer model on held-out cells (one verify stands for the three). The
    runtime's ``onnx`` backend feeds the user's NHWC file channels-last and gets PyTorch's scores."""
    from edgefpga import runtime
    from edgefpga.sim.verify import verify

    *_, test_raw = cells
    for way, report in convert_every_way(exports, cells, tmp_path).items():
        assert report["hls"]["project"] is None, way  # padded pools: the integer model stands in (seconds)
    result = verify(tmp_path / f"build_{REFERENCE}", images=str(tmp_path / "test.npz"), sample=4, progress=False,
                    agreement=0.9)
    assert result["rtl"]["bit_exact_frames"] == result["rtl"]["n"] == 4
    assert result["failed"] == []
    assert_one_design(cells, tmp_path)
    with runtime.open(tmp_path / f"build_{REFERENCE}", backend="onnx") as engine:  # the user's NHWC file, fed NHWC
        results = engine.infer(list(test_raw))
    with torch.no_grad():
        pixels = resize_batch(test_raw, SPEC).transpose(0, 2, 3, 1).astype(np.float32)
        expected = trained(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose([r.scores for r in results], expected, atol=1e-4)


class Body(nn.Module):
    """``body`` on an NCHW image, then a global average pool and a dense layer."""

    def __init__(self, body, channels: int = 4, head=None):
        super().__init__()
        self.head, self.body, self.fc = head or (lambda x: x), body, nn.Linear(channels, 2)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.body(self.head(x)), 1), 1))


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


REFUSED = {  # a habit the fold would get wrong -> what the one line must name
    "zero_pad_before_max_pool_of_signed_map": (
        Body(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ZeroPad2d(1), nn.MaxPool2d(3))),
        "(Pad), constant_value: zeros before MaxPool"),
    "reflection_pad": (Body(nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 4, 3))), "(Pad), mode: reflect"),
    "pad_into_relu": (Body(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ZeroPad2d(1), nn.ReLU())), "(Pad), position"),
    "pad_as_wide_as_the_window": (Body(nn.Sequential(nn.ZeroPad2d(2), nn.Conv2d(3, 4, 3, padding=1))), "(Pad), pads"),
    "sub_inside_the_net": (Body(nn.Sequential(nn.Conv2d(3, 4, 3), Lambda(lambda x: x - 0.5))), "(Sub), position"),
    "square_of_the_image": (Body(nn.Conv2d(3, 4, 3), head=Lambda(lambda x: x * x)), "(Mul), inputs"),
    "constant_over_image": (Body(nn.Conv2d(3, 4, 3), head=Lambda(lambda x: torch.div(torch.tensor(2.0), x + 1))),
                            "(Div), input 0"),
    "mean_per_row": (Body(nn.Conv2d(3, 4, 3), head=Lambda(lambda x: x - torch.ones(16, 1) * 0.5)), "(Sub), input 1"),
    # ONNX broadcasting aligns the last axes: a [16] on the 3x16x16 image is one value per column
    "shift_per_column": (Body(nn.Conv2d(3, 4, 3), head=Lambda(lambda x: x + torch.linspace(-1, 1, 16))),
                         "(Add), input 1: a constant of shape [16] on the tensor [1, 3, 16, 16] varies along W"),
    "scale_per_column": (Body(nn.Conv2d(3, 4, 3), head=Lambda(lambda x: x * torch.linspace(0.5, 1, 16))),
                         "(Mul), input 1: a constant of shape [16] on the tensor [1, 3, 16, 16] varies along W"),
    "transpose_of_height_and_width": (Body(nn.Conv2d(3, 4, 3), head=Lambda(lambda x: x.permute(0, 3, 2, 1))),
                                      "(Transpose), perm"),
}


def test_habits_outside_the_fold_are_refused(tmp_path):
    """One line naming the file, the node, the op and the attribute, before any work (the CLI's
    exit status 2 and empty build folder: test_capabilities.py::test_refused_up_front)."""
    for label, (module, needle) in REFUSED.items():
        path = export(module.eval(), tmp_path / f"{label}.onnx", nhwc=label.startswith("transpose"),
                      opset_version=13, dynamo=False)
        with pytest.raises(ConversionError) as refused:
            check_onnx(path)
        message = str(refused.value)
        assert "\n" not in message and message.startswith(f"{path}: node '"), (label, message)
        assert needle in message, (label, message)


def test_constants_broadcast_as_onnx_does(tmp_path):
    """``map + torch.tensor([C values])`` adds one value per column, not per channel (ONNX and
    numpy align the last axes; PyTorch needs W == C for it): both exporters' files are refused by
    name, where folding the values per channel would compute something else. The same values as
    [C, 1, 1] are a per-channel bias: folded into the Conv's bias, the sum PyTorch computes, so
    the canonical graph is that of a Conv with that bias (and computes what PyTorch computes)."""
    torch.manual_seed(0)
    values = torch.linspace(-1, 1, 16)
    per_column = Body(nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), Lambda(lambda x: x + values)), 16).eval()
    conv = nn.Conv2d(3, 16, 3, padding=1)
    per_channel = Body(nn.Sequential(conv, Lambda(lambda x: x + values.view(16, 1, 1))), 16).eval()
    pixels = np.random.default_rng(0).uniform(0, 255, (2, SPEC.channels, SPEC.height, SPEC.width)).astype(np.float32)
    for way in ("opset13", "default"):
        path = export(per_column, tmp_path / way / "per_column.onnx", nhwc=False, **WAYS[way])
        with pytest.raises(ConversionError) as refused:
            check_onnx(path)
        assert "\n" not in str(refused.value) and "(Add), input 1: a constant of shape [16] on the tensor " \
            "[1, 16, 16, 16] varies along W" in str(refused.value), (way, str(refused.value))
        graph = canonical(export(per_channel, tmp_path / way / "per_channel.onnx", nhwc=False, **WAYS[way]))
        assert [n.op_type for n in graph.graph.node] == ["Conv", "AveragePool", "Flatten", "MatMul", "Add"], way
        bias = graph.get_initializer(graph.graph.node[0].input[2])
        assert np.array_equal(bias, (conv.bias + values).detach().numpy()), way  # float32 sums, as PyTorch's
        session = onnx_session(graph.model)
        with torch.no_grad():
            expected = per_channel(torch.from_numpy(pixels)).numpy()
        ours = np.concatenate([session.run(None, {session.get_inputs()[0].name: p[None]})[0] for p in pixels])
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-4, err_msg=way)
